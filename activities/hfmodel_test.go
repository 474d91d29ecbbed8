package activities

import (
	"context"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/config"
	"github.com/alignflow/alignflow/internal/fixtures"
	"github.com/alignflow/alignflow/model/hf/hfmodel"
	"github.com/alignflow/alignflow/model/hf/safetensors"
	"github.com/alignflow/alignflow/model/lora"
	"github.com/alignflow/alignflow/model/transformer"
	"github.com/alignflow/alignflow/pipeline"
	"github.com/alignflow/alignflow/reward"
)

// TestStagesOnAHuggingFaceModel runs every stage on llama2.c's stories260K
// loaded from its Hugging Face directory: the data stage stores the model,
// SFT starts from its weights (not a fresh initialisation: the first loss
// stays near the pretrained weights), and the reward model, a REINFORCE iteration and
// the evaluation run on its architecture and tokenizer.
func TestStagesOnAHuggingFaceModel(t *testing.T) {
	dir := fixtures.Path(t, "models", "stories260K")
	store, err := artifact.Open(t.TempDir())
	require.NoError(t, err)
	a := New(store)
	a.DataRoots = config.AnyFile()
	ctx := context.Background()
	spec := config.Default()
	spec.ReuseStageOutputs = false
	spec.Model.Path = dir
	spec.Data.Generate.Prompts = 200
	spec.SFT.Steps, spec.SFT.BatchSize = 40, 8 // enough to learn to end a response with EOS
	spec.Reward.Steps, spec.Reward.RegressionSteps, spec.Reward.BatchSize = 3, 3, 8
	spec.Reinforce.PromptsPerIteration, spec.Reinforce.BatchSize, spec.Reinforce.MaxTokens = 4, 16, 16
	spec.Eval.Prompts, spec.Eval.SamplesPerPrompt = 4, 2
	spec.Compare.BenchPairsPerSubset = 2
	require.NoError(t, spec.Validate())
	require.NoError(t, spec.CheckFiles())

	data, err := a.PrepareData(ctx, pipeline.PrepareDataInput{RunID: "hf", Spec: spec})
	require.NoError(t, err)
	require.NotNil(t, data.Model)
	assert.Equal(t, "LlamaForCausalLM", data.Model.Architecture)
	assert.Equal(t, []int32{2}, data.Model.EOS)
	assert.Contains(t, data.Model.Files, "tokenizer.json")
	base, err := store.GetWeights(data.Model.Weights)
	require.NoError(t, err)
	cfg, err := transformer.ConfigOf(base)
	require.NoError(t, err)
	assert.Equal(t, 4, cfg.KVHeadCount())
	want, err := hfmodel.Load(dir)
	require.NoError(t, err)
	assert.Equal(t, want.Params.Digest(), base.Digest(), "the stored weights are the directory's")

	sft, err := a.TrainSFT(ctx, pipeline.TrainInput{RunID: "hf", Spec: spec, Data: data})
	require.NoError(t, err)
	assert.Equal(t, 40, sft.Steps)
	assert.Less(t, sft.FinalLoss, sft.FirstLoss/3, "SFT learns the task")
	tuned, err := store.GetWeights(sft.Checkpoint)
	require.NoError(t, err)
	var moved, size float64
	for _, n := range base.Names() {
		for i, v := range base.Get(n).Data {
			d := float64(tuned.Get(n).Data[i] - v)
			moved, size = moved+d*d, size+float64(v)*float64(v)
		}
	}
	assert.Less(t, moved/size, 0.25, "fine-tuned from the pretrained weights, not from scratch")
	rm, err := a.TrainRewardModel(ctx, pipeline.TrainInput{RunID: "hf", Spec: spec, Data: data, Base: sft.Checkpoint})
	require.NoError(t, err)
	assert.Equal(t, 6, rm.Steps)
	ev, err := a.EvaluateRewardModel(ctx, pipeline.RewardEvalInput{RunID: "hf", Spec: spec, Data: data, RewardModel: rm.Checkpoint})
	require.NoError(t, err)
	assert.Positive(t, ev.HeldoutPairs)
	it, err := a.ReinforceIteration(ctx, pipeline.IterationInput{RunID: "hf", Spec: spec, Data: data, Policy: sft.Checkpoint, Reference: sft.Checkpoint, RewardModel: rm.Checkpoint})
	require.NoError(t, err)
	assert.NotEqual(t, sft.Digest, it.PolicyDigest, "the update changed the policy")
	pe, err := a.EvaluatePolicy(ctx, pipeline.PolicyEvalInput{RunID: "hf", Spec: spec, Data: data, Policy: it.Policy, Reference: sft.Checkpoint,
		RewardModel: rm.Checkpoint, Label: pipeline.StageEvalAfter})
	require.NoError(t, err)
	require.NotEmpty(t, pe.Samples)
	require.NotNil(t, pe.GoldScore)
	assert.Greater(t, pe.KLSequence+pe.KLPenalty, 0.0)
	t.Logf("SFT loss %.3f -> %.3f, sample %q -> %q", sft.FirstLoss, sft.FinalLoss, pe.Samples[0].Prompt, pe.Samples[0].Response)
}

// TestRewardModelFromAClassifierDirectory starts the reward model from
// reward.path, a LlamaForSequenceClassification on stories260K's backbone,
// instead of a fresh head on the SFT backbone; a directory that is not a
// reward model, or one with another tokenizer, is refused.
func TestRewardModelFromAClassifierDirectory(t *testing.T) {
	src := fixtures.Path(t, "models", "stories260K")
	hf, err := hfmodel.Load(src)
	require.NoError(t, err)
	given, err := reward.InitFromBackbone(hf.Params, 77)
	require.NoError(t, err)
	for i := range given.Get(reward.HeadW).Data {
		given.Get(reward.HeadW).Data[i] *= 50 // a head no fresh initialisation would draw
	}
	files := maps.Clone(hf.Files) // the exact bytes the model was read from
	rmDir := filepath.Join(t.TempDir(), "rm")
	require.NoError(t, hfmodel.ExportReward(rmDir, files, hf.Config.Transformer, given, safetensors.F32))

	store, err := artifact.Open(t.TempDir())
	require.NoError(t, err)
	a := New(store)
	a.DataRoots = config.AnyFile()
	ctx := context.Background()
	spec := config.Default()
	spec.ReuseStageOutputs = false
	spec.Model.Path, spec.Reward.Path, spec.Reward.Recipe = src, rmDir, "bt"
	spec.Data.Generate.Prompts = 200
	spec.SFT.Steps, spec.SFT.BatchSize = 2, 8
	spec.Reward.Steps, spec.Reward.BatchSize, spec.Reward.LearningRate = 2, 8, 1e-5
	require.NoError(t, spec.Validate())
	data, err := a.PrepareData(ctx, pipeline.PrepareDataInput{RunID: "rp", Spec: spec})
	require.NoError(t, err)
	require.NotNil(t, data.Model.Reward)
	assert.Equal(t, rmDir, data.Model.RewardSource)
	sft, err := a.TrainSFT(ctx, pipeline.TrainInput{RunID: "rp", Spec: spec, Data: data})
	require.NoError(t, err)
	rm, err := a.TrainRewardModel(ctx, pipeline.TrainInput{RunID: "rp", Spec: spec, Data: data, Base: sft.Checkpoint})
	require.NoError(t, err)
	trained, err := store.GetWeights(rm.Checkpoint)
	require.NoError(t, err)
	assert.InDeltaSlice(t, given.Get(reward.HeadW).Data, trained.Get(reward.HeadW).Data, 1e-3, "two small steps from the given head")

	for name, dir := range map[string]string{"a language model": src} {
		bad := spec
		bad.Reward.Path = dir
		_, err := a.PrepareData(ctx, pipeline.PrepareDataInput{RunID: "bad", Spec: bad})
		require.Error(t, err, name)
		assert.Contains(t, err.Error(), "not a reward model")
	}
	other := filepath.Join(t.TempDir(), "other")
	tok, _ := os.ReadFile(fixtures.Path(t, "tokenizers", "llama2", "tokenizer.json"))
	files["tokenizer.json"] = tok
	require.NoError(t, hfmodel.ExportReward(other, files, hf.Config.Transformer, given, safetensors.F32))
	bad := spec
	bad.Reward.Path = other
	_, err = a.PrepareData(ctx, pipeline.PrepareDataInput{RunID: "bad2", Spec: bad})
	require.Error(t, err)
	bad.Model.Path = ""
	assert.ErrorContains(t, bad.Validate(), "reward.path: needs model.path")
}

// TestMaxLenMustFitTheSlidingWindow: a Mistral whose sliding_window is
// shorter than max_position_embeddings (Mistral-7B-v0.1's 4096 of 32768)
// runs as transformers runs it while model.max_len fits the window, and
// is refused, naming both lengths and the field, when it does not.
func TestMaxLenMustFitTheSlidingWindow(t *testing.T) {
	src := fixtures.Path(t, "models", "stories260K")
	dir := t.TempDir()
	for _, name := range []string{"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} {
		b, err := os.ReadFile(filepath.Join(src, name))
		require.NoError(t, err)
		if name == "config.json" {
			var c map[string]any
			require.NoError(t, json.Unmarshal(b, &c))
			c["architectures"], c["model_type"], c["sliding_window"] = []string{"MistralForCausalLM"}, "mistral", 64
			b, err = json.Marshal(c)
			require.NoError(t, err)
		}
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), b, 0o644))
	}
	spec := config.Default()
	spec.Model.Path, spec.Model.MaxLen = dir, 64
	o, err := openModel(spec, config.AnyFile())
	require.NoError(t, err)
	assert.Equal(t, 64, o.cfg.MaxLen)
	spec.Model.MaxLen = 65
	_, err = openModel(spec, config.AnyFile())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "model.max_len 65: model.path "+dir+": sequences of up to 65 tokens do not fit config.json's sliding_window 64: MistralForCausalLM attends over at most the last 64 tokens")
}

// TestLoRAPathIsAPEFTAdapterOfTheModel: lora.path's PEFT adapter is read
// back exactly as written, must be the adapter the spec's lora describes,
// and what PEFT can write but alignflow does not compute is refused naming
// the field.
func TestLoRAPathIsAPEFTAdapterOfTheModel(t *testing.T) {
	src := fixtures.Path(t, "models", "stories260K")
	spec := config.Default()
	spec.Model.Path = src
	o, err := openModel(spec, config.AnyFile())
	require.NoError(t, err)
	ad, err := lora.Init(o.cfg, lora.Config{Rank: 2, Alpha: 8, Targets: []string{"q_proj", "down_proj"}}, 1)
	require.NoError(t, err)
	for _, n := range ad.Names() {
		for i := range ad.Get(n).Data {
			ad.Get(n).Data[i] += float32(i%7) * 0.01 // B too
		}
	}
	dir := filepath.Join(t.TempDir(), "adapter")
	require.NoError(t, hfmodel.ExportPEFT(dir, o.cfg, ad, hfmodel.TaskCausalLM, src))

	spec.LoRA = config.LoRA{Rank: 2, Alpha: 8, Targets: []string{"down_proj", "q_proj"}, Path: dir}
	require.NoError(t, spec.Validate())
	o, err = openModel(spec, config.AnyFile())
	require.NoError(t, err)
	require.Equal(t, ad.Names(), o.lora.Names())
	for _, n := range ad.Names() {
		assert.Equal(t, ad.Get(n).Data, o.lora.Get(n).Data, "%s read back exactly", n)
	}

	for _, c := range []struct {
		name string
		lora config.LoRA
		edit func(map[string]any)
		want string
	}{
		{"another rank", config.LoRA{Rank: 4, Alpha: 8, Targets: []string{"q_proj", "down_proj"}}, nil, "lora.rank is 4, but " + dir + "/adapter_config.json has r 2"},
		{"the default alpha", config.LoRA{Rank: 2, Targets: []string{"q_proj", "down_proj"}}, nil, "lora.alpha is 4 (0 means 2 x rank), but " + dir + "/adapter_config.json has lora_alpha 8"},
		{"other targets", config.LoRA{Rank: 2, Alpha: 8}, nil, "lora.targets are q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj (none: every projection), but"},
		{"DoRA", spec.LoRA, func(m map[string]any) { m["use_dora"] = true }, "adapter_config.json: use_dora: DoRA is not supported"},
		{"rsLoRA", spec.LoRA, func(m map[string]any) { m["use_rslora"] = true }, "use_rslora: rsLoRA's scaling"},
		{"IA3", spec.LoRA, func(m map[string]any) { m["peft_type"] = "IA3" }, `peft_type: "IA3" is not supported (supported: LORA)`},
		{"a module the model lacks", spec.LoRA, func(m map[string]any) { m["target_modules"] = []string{"q_proj", "fc1"} }, `target_modules: targets[1]: "fc1" is not a module of this model`},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := dir
			if c.edit != nil {
				d = filepath.Join(t.TempDir(), "edited")
				require.NoError(t, os.CopyFS(d, os.DirFS(dir)))
				b, err := os.ReadFile(filepath.Join(d, hfmodel.PEFTConfigFile))
				require.NoError(t, err)
				var m map[string]any
				require.NoError(t, json.Unmarshal(b, &m))
				c.edit(m)
				b, _ = json.Marshal(m)
				require.NoError(t, os.WriteFile(filepath.Join(d, hfmodel.PEFTConfigFile), b, 0o644))
			}
			s := spec
			s.LoRA = c.lora
			s.LoRA.Path = d
			_, err := openModel(s, config.AnyFile())
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.want)
		})
	}
	bad := config.Default()
	bad.LoRA = config.LoRA{Rank: 2, Path: dir}
	assert.ErrorContains(t, bad.Validate(), "lora.path: needs model.path")

	// The bundled model's MLP is not gated: the data stage names its modules.
	bundled := config.Default()
	bundled.LoRA = config.LoRA{Rank: 2, Targets: []string{"q_proj", "gate_proj"}}
	require.NoError(t, bundled.Validate())
	_, err = openModel(bundled, config.AnyFile())
	assert.ErrorContains(t, err, `spec field lora.targets[1]: "gate_proj" is not a module of this model (its modules: q_proj, k_proj, v_proj, o_proj, up_proj, down_proj)`)
}
