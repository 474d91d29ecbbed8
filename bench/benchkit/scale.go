package benchkit

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/gomlx/gomlx/backends"

	"github.com/alignflow/alignflow/model/lora"
	"github.com/alignflow/alignflow/model/optim"
	"github.com/alignflow/alignflow/model/transformer"
	"github.com/alignflow/alignflow/model/weights"
	"github.com/alignflow/alignflow/policy"
)

// The scale benchmark times a randomly initialised model of a real
// checkpoint's shape (SmolLM2-135M) on random tokens: what the bundled
// model's stages cannot show is how the pure-Go backend fares where the
// matrix products, not per-operation overhead, dominate. Its stages are a
// training step, the prefill of a prompt batch and the decoding steps
// after it, at batch 1 and 16.

// ScaleModelSmolLM2 names the SmolLM2-135M-shaped benchmark model.
const ScaleModelSmolLM2 = "smollm2-135m"

// PrefillStageName and DecodeStageName name the scale benchmark's
// generation stages at a batch size.
func PrefillStageName(batch int) string { return fmt.Sprintf("prefill_batch%d", batch) }

// DecodeStageName names the decoding stage at a batch size.
func DecodeStageName(batch int) string { return fmt.Sprintf("decode_batch%d", batch) }

// ScaleSizes size the scale benchmark. JSON field names are what
// bench/pytorch/scale.py reads from spec.json.
type ScaleSizes struct {
	Name  string             `json:"name"`
	Seed  uint64             `json:"seed"`
	Model transformer.Config `json:"model"`
	AdamW AdamWSettings      `json:"adamw"`
	// Train steps run on TrainBatch rows of TrainPrompt prompt tokens and
	// TrainResponse response tokens (the loss counts the response).
	TrainBatch    int     `json:"train_batch"`
	TrainPrompt   int     `json:"train_prompt"`
	TrainResponse int     `json:"train_response"`
	LearningRate  float64 `json:"learning_rate"`
	// Generation prefills GenBatches rows of PromptLen tokens, then runs
	// DecodeSteps greedy decoding steps (one token per row each).
	PromptLen   int   `json:"prompt_len"`
	DecodeSteps int   `json:"decode_steps"`
	GenBatches  []int `json:"generation_batches"`
	Pad         int32 `json:"pad"`
	// LoRA is the adapter the LoRA train step trains over the frozen model.
	LoRA lora.Config `json:"lora"`
}

// SmolLM2Sizes are SmolLM2-135M's shape (its config.json: hidden 576, 30
// layers, 9 heads, 3 key/value heads, intermediate 1536, vocab 49152,
// rope_theta 100000, rms_norm_eps 1e-5, tied embeddings), with max_len
// cut to what the stages use: it sizes the rotary table, not the weights.
func SmolLM2Sizes() ScaleSizes {
	a := optim.DefaultAdamW
	cfg := transformer.Config{Vocab: 49152, Dim: 576, Heads: 9, KVHeads: 3, Layers: 30, Hidden: 1536, MaxLen: 128,
		RopeTheta: 100000, NormEps: 1e-5, GatedMLP: true, TiedEmbeddings: true}
	return ScaleSizes{
		Name: ScaleModelSmolLM2, Seed: 1, Model: cfg,
		AdamW:      AdamWSettings{Beta1: a.Beta1, Beta2: a.Beta2, Eps: a.Eps, WeightDecay: a.WeightDecay, ClipNorm: a.ClipNorm},
		TrainBatch: 4, TrainPrompt: 16, TrainResponse: 49, LearningRate: 3e-4,
		PromptLen: 32, DecodeSteps: 16, GenBatches: []int{1, 16},
		Pad:  policy.PadID(cfg),
		LoRA: lora.Config{Rank: 8, Alpha: 16, Targets: lora.ModuleNames(cfg)},
	}
}

// ScaleCounts are the scale benchmark's warmup and timed steps: a train
// step of the 135M model takes seconds on 2 cores.
var (
	ScaleQuickCounts = Counts{TrainWarmup: 1, TrainSteps: 2, GenWarmup: 1, GenSteps: 2}
	ScaleFullCounts  = Counts{TrainWarmup: 1, TrainSteps: 5, GenWarmup: 1, GenSteps: 5}
)

// ScaleFixtures are the scale benchmark's weights and token data.
type ScaleFixtures struct {
	Sizes  ScaleSizes
	Counts Counts
	Policy *weights.Set
	// Adapter is the LoRA train step's fresh adapter (PEFT's
	// initialisation: B is zero, so its first loss is the full model's).
	Adapter *weights.Set
	// TrainBatches feed the train steps, one per step (warmup included).
	TrainBatches []*policy.Batch
	// Prompts are each generation batch's prompts, by batch size.
	Prompts map[int][][]int32
}

// NewScaleFixtures draws the weights and random tokens from the seed.
func NewScaleFixtures(s ScaleSizes, c Counts) (*ScaleFixtures, error) {
	cfg := s.Model
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(s.Seed, 0x5ca1e))
	tokens := func(n int) []int32 {
		out := make([]int32, n)
		for i := range out {
			out[i] = int32(rng.IntN(cfg.Vocab))
		}
		return out
	}
	f := &ScaleFixtures{Sizes: s, Counts: c, Policy: policy.Init(cfg, s.Seed), Prompts: map[int][][]int32{}}
	var err error
	if f.Adapter, err = lora.Init(cfg, s.LoRA, s.Seed); err != nil {
		return nil, err
	}
	for i := 0; i < c.TrainWarmup+c.TrainSteps; i++ {
		var pr, rs [][]int32
		for j := 0; j < s.TrainBatch; j++ {
			pr, rs = append(pr, tokens(s.TrainPrompt)), append(rs, tokens(s.TrainResponse))
		}
		b, err := policy.MakeBatch(cfg, s.TrainBatch, pr, rs)
		if err != nil {
			return nil, err
		}
		f.TrainBatches = append(f.TrainBatches, b)
	}
	for _, bs := range s.GenBatches {
		for j := 0; j < bs; j++ {
			f.Prompts[bs] = append(f.Prompts[bs], tokens(s.PromptLen))
		}
	}
	return f, nil
}

// Scale fixture files.
const (
	ScaleTrainBatchesFile = "train_batches.json"
	ScaleLoRAInitFile     = "lora_init.safetensors"
	ScalePromptsFile      = "prompts.json"
)

// ScaleSpecJSON is the scale benchmark's spec.json.
type ScaleSpecJSON struct {
	Kind string `json:"kind"` // "scale"
	ScaleSizes
	Counts Counts            `json:"counts"`
	Stages []string          `json:"stages"`
	Files  map[string]string `json:"files"`
	Notes  []string          `json:"notes"`
}

// Write stores the fixtures in dir.
func (f *ScaleFixtures) Write(dir string, stages []string) error {
	if err := os.MkdirAll(filepath.Join(dir, ChecksDir), 0o755); err != nil {
		return err
	}
	if err := writeWeights(filepath.Join(dir, PolicyInitFile), f.Policy); err != nil {
		return err
	}
	if err := writeWeights(filepath.Join(dir, ScaleLoRAInitFile), f.Adapter); err != nil {
		return err
	}
	var train []sftBatchJSON
	for _, b := range f.TrainBatches {
		train = append(train, sftBatchJSON{Inputs: b.Inputs, Targets: b.Targets, Mask: b.Mask, Rows: b.Rows})
	}
	prompts := map[string][][]int32{}
	for bs, p := range f.Prompts {
		prompts[strconv.Itoa(bs)] = p
	}
	spec := ScaleSpecJSON{Kind: "scale", ScaleSizes: f.Sizes, Counts: f.Counts, Stages: stages,
		Files: map[string]string{"policy_init": PolicyInitFile, "lora_init": ScaleLoRAInitFile, "train_batches": ScaleTrainBatchesFile,
			"prompts": ScalePromptsFile, "checks": ChecksDir},
		Notes: []string{
			"weights: float32 safetensors with alignflow's parameter names; linear weights are [in, out] (y = x @ W); tied embeddings: logits = h @ embed^T",
			"gated MLP: w2(silu(w1 x) * w3 x); grouped-query attention: key/value head j serves query heads j*heads/kv_heads ...",
			"train_batches: one batch per step, warmup first; the step is policy SFT: forward, backward, clipping, AdamW",
			"policy_train_step_lora: the same steps training only lora_init, PEFT's LoRA on the projections lora.target_modules names (x W + lora_alpha/r * (x A) B, A [in, r] and B [r, out] as layerN.wq.lora_a / lora_b), the model frozen",
			"prefill: one forward pass over the prompts, logits of the last position; decode: decode_steps greedy steps through the KV cache after a prefill that is not timed",
		}}
	if err := WriteJSON(filepath.Join(dir, SpecFile), spec); err != nil {
		return err
	}
	for name, v := range map[string]any{ScaleTrainBatchesFile: train, ScalePromptsFile: prompts} {
		if err := writeCompact(filepath.Join(dir, name), v); err != nil {
			return err
		}
	}
	return nil
}

// ScaleStages are the scale benchmark's stages: the train step, then
// prefill and decoding at each generation batch size.
func ScaleStages(be backends.Backend, f *ScaleFixtures) []*Stage {
	s := f.Sizes
	out := []*Stage{scaleTrain(be, f), scaleTrainLoRA(be, f)}
	e := policy.NewEngine(be, s.Model, f.Policy)
	for _, bs := range s.GenBatches {
		out = append(out, scalePrefill(e, f, bs))
	}
	for _, bs := range s.GenBatches {
		out = append(out, scaleDecode(e, f, bs))
	}
	return out
}

// scaleTrain is PolicyTrain at the model's scale (scaleTrainOf).
func scaleTrain(be backends.Backend, f *ScaleFixtures) *Stage {
	s := f.Sizes
	tr := optim.NewTrainer(be, f.Policy.Names(), s.AdamW.Optim(), policy.SFTLoss(s.Model))
	return scaleTrainOf(PolicyTrainStep, tr, f.Policy, f)
}

// scaleTrainLoRA is scaleTrain training f.Adapter over the frozen model:
// the trainer reads the model's weights and differentiates only the
// adapter's, and the session keeps moments of the adapter only.
func scaleTrainLoRA(be backends.Backend, f *ScaleFixtures) *Stage {
	s := f.Sizes
	cfg := s.Model
	cfg.LoRAScale = s.LoRA.Scale()
	tr := optim.NewTrainer(be, f.Adapter.Names(), s.AdamW.Optim(), policy.SFTLoss(cfg), f.Policy.Names()...).WithFrozen(f.Policy)
	return scaleTrainOf(PolicyTrainStepLoRA, tr, f.Adapter, f)
}

// scaleTrainOf is the stage of tr's steps on the train batches from a copy
// of params: one session from the end of Prepare, closed by Done.
func scaleTrainOf(name string, tr *optim.Trainer, params *weights.Set, f *ScaleFixtures) *Stage {
	lr := f.Sizes.LearningRate
	var sess *optim.Session
	return &Stage{
		Name: name, Unit: "tokens/s",
		Prepare: func() error {
			// Every batch has the same width: one throwaway step compiles.
			if err := compileStep(tr, params, lr, f.TrainBatches[0]); err != nil {
				return err
			}
			p := params.Clone()
			var err error
			sess, err = tr.Start(p, optim.NewState(p))
			return err
		},
		Done: closeSession(&sess),
		Step: func(i int) (Step, error) {
			b := f.TrainBatches[i]
			res, err := sess.Step(lr, b)
			if err != nil {
				return Step{}, err
			}
			return Step{Loss: res.Loss, Work: float64(len(b.Inputs) * len(b.Inputs[0])),
				Extra: map[string]float64{"grad_norm": res.GradNorm}}, nil
		},
	}
}

// PrefillCheck is what the reference verifies the prefill against: the
// logits of the first row, and the greedy tokens decoded after it.
type PrefillCheck struct {
	Logits []float32 `json:"logits"`
	Greedy [][]int32 `json:"greedy"`
}

// decodeOnce makes params ready for decoding, prefills the batch and
// decodes it greedily once: that compiles every graph a generation stage's
// steps use, and gives what the reference checks.
func decodeOnce(e *policy.Engine, f *ScaleFixtures, batch int) (*policy.Decoding, *PrefillCheck, error) {
	dec, err := e.Decoding(f.Policy)
	if err != nil {
		return nil, nil, err
	}
	d, err := dec.Prefill(f.Prompts[batch], batch)
	if err != nil {
		return nil, nil, err
	}
	defer d.Close()
	c := &PrefillCheck{Logits: append([]float32(nil), d.Logits[:f.Sizes.Model.Vocab]...)}
	if c.Greedy, err = greedy(d, f.Sizes.Model.Vocab, f.Sizes.DecodeSteps); err != nil {
		return nil, nil, err
	}
	return dec, c, nil
}

func scalePrefill(e *policy.Engine, f *ScaleFixtures, batch int) *Stage {
	prompts := f.Prompts[batch]
	var dec *policy.Decoding
	st := &Stage{Name: PrefillStageName(batch), Unit: "tokens/s"}
	st.Prepare = func() error {
		var err error
		dec, st.Check, err = decodeOnce(e, f, batch)
		return err
	}
	st.Step = func(int) (Step, error) {
		d, err := dec.Prefill(prompts, batch)
		if err != nil {
			return Step{}, err
		}
		d.Close()
		return Step{Loss: math.NaN(), Work: float64(batch * f.Sizes.PromptLen)}, nil
	}
	return st
}

func scaleDecode(e *policy.Engine, f *ScaleFixtures, batch int) *Stage {
	prompts := f.Prompts[batch]
	var dec *policy.Decoding
	st := &Stage{Name: DecodeStageName(batch), Unit: "tokens/s"}
	st.Prepare = func() error {
		var err error
		dec, _, err = decodeOnce(e, f, batch)
		return err
	}
	st.Step = func(int) (Step, error) {
		d, err := dec.Prefill(prompts, batch)
		if err != nil {
			return Step{}, err
		}
		defer d.Close()
		t := time.Now()
		if _, err := greedy(d, f.Sizes.Model.Vocab, f.Sizes.DecodeSteps); err != nil {
			return Step{}, err
		}
		return Step{Loss: math.NaN(), Work: float64(batch * f.Sizes.DecodeSteps), Seconds: time.Since(t).Seconds()}, nil
	}
	return st
}

// greedy runs steps decoding steps after a prefill, each feeding every
// row's most likely next token (the first of equal ones), and returns the
// steps+1 tokens chosen per row (the first from the prefill's logits).
func greedy(d *policy.Decoder, vocab, steps int) ([][]int32, error) {
	rows := len(d.Logits) / vocab
	out := make([][]int32, rows)
	cur := make([]int32, rows)
	for step := 0; ; step++ {
		for b := range cur {
			row := d.Logits[b*vocab : (b+1)*vocab]
			best := 0
			for j, v := range row {
				if v > row[best] {
					best = j
				}
			}
			cur[b] = int32(best)
			out[b] = append(out[b], cur[b])
		}
		if step == steps {
			return out, nil
		}
		if err := d.Step(cur); err != nil {
			return nil, fmt.Errorf("decode step %d: %w", step+1, err)
		}
	}
}
