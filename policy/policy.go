// Package policy is the language model being aligned: the transformer backbone
// with a language-model head, its token log-probabilities, supervised
// fine-tuning, and sampling with a KV cache.
package policy

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/pkg/core/dtypes"
	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"

	"github.com/alignflow/alignflow/model/backend"
	"github.com/alignflow/alignflow/model/lora"
	"github.com/alignflow/alignflow/model/optim"
	"github.com/alignflow/alignflow/model/progress"
	"github.com/alignflow/alignflow/model/tokenizer"
	"github.com/alignflow/alignflow/model/transformer"
	"github.com/alignflow/alignflow/model/weights"
)

// LMHead is the output projection [D, Vocab].
const LMHead = "lm_head"

// Init returns a fresh policy: backbone plus language-model head (none
// where the model reads its logits off the embeddings).
func Init(cfg transformer.Config, seed uint64) *weights.Set {
	s := transformer.InitBackbone(cfg, seed)
	s.Metadata["kind"] = "policy"
	if cfg.TiedEmbeddings {
		return s
	}
	head := weights.NewTensor(cfg.Dim, cfg.Vocab)
	r := rand.New(rand.NewPCG(seed, 0x4ead))
	for i := range head.Data {
		head.Data[i] = float32(r.NormFloat64() * 0.02)
	}
	s.Put(LMHead, head)
	return s
}

// Logits are the next-token logits [B,T,Vocab] of tokens [B,T].
func Logits(p transformer.Params, cfg transformer.Config, tokens *graph.Node) *graph.Node {
	return head(p, cfg, transformer.Hidden(p, cfg, tokens), false)
}

// head maps hidden states to logits: by the language-model head [D,Vocab]
// (transposed: [Vocab,D]), or by the embedding matrix [Vocab,D] when the
// model ties them.
func head(p transformer.Params, cfg transformer.Config, h *graph.Node, transposed bool) *graph.Node {
	switch {
	case cfg.TiedEmbeddings:
		return transformer.LinearT(h, p[transformer.Embed])
	case transposed:
		return transformer.LinearT(h, p[LMHead])
	}
	return backend.Linear(h, p[LMHead])
}

// TokenLogProbs returns log pi(target_t | inputs_<=t) for every position, [B,T].
func TokenLogProbs(p transformer.Params, cfg transformer.Config, inputs, targets *graph.Node) *graph.Node {
	logits := Logits(p, cfg, inputs)
	logp := transformer.LogSoftmax(logits)
	onehot := graph.OneHot(targets, cfg.Vocab, dtypes.Float32)
	return graph.ReduceSum(graph.Mul(logp, onehot), -1)
}

// Batch is a padded batch of prompt+response sequences for teacher forcing.
// Inputs are the sequence without its last token, Targets without its first;
// Mask is 1 where the target is a response token (EOS included).
type Batch struct {
	Inputs, Targets [][]int32
	Mask            [][]float32
	// Ended reports whether the response ends with EOS (not truncated).
	Ended []bool
	// Rows is how many rows are real; the rest pad the batch to a fixed size.
	Rows int
}

// MakeBatch builds a batch of exactly size rows from prompts and responses
// (token ids; responses include EOS when they ended). Rows are padded to the
// bucket length of the longest sequence (a multiple of 8, at most
// cfg.MaxLen): few distinct shapes keep compiled graphs few, and short batches
// do not pay for padding. Responses too long for MaxLen are cut.
func MakeBatch(cfg transformer.Config, size int, prompts, responses [][]int32) (*Batch, error) {
	if len(prompts) != len(responses) {
		return nil, fmt.Errorf("make batch: %d prompts but %d responses", len(prompts), len(responses))
	}
	if len(prompts) > size {
		return nil, fmt.Errorf("make batch: %d rows exceed batch size %d", len(prompts), size)
	}
	longest := 1
	for i := range prompts {
		longest = max(longest, len(prompts[i])+len(responses[i])-1)
	}
	t := BucketLen(longest, cfg.MaxLen)
	pad := PadID(cfg)
	b := &Batch{Rows: len(prompts)}
	for i := 0; i < size; i++ {
		in := make([]int32, t)
		tg := make([]int32, t)
		mk := make([]float32, t)
		for j := range in {
			in[j], tg[j] = pad, pad
		}
		ended := false
		if i < len(prompts) {
			pr := prompts[i]
			if len(pr) < 1 || len(pr) >= cfg.MaxLen {
				return nil, fmt.Errorf("make batch: prompt of %d tokens does not fit max_len %d", len(pr), cfg.MaxLen)
			}
			seq := append(append([]int32(nil), pr...), responses[i]...)
			if len(seq) > t+1 {
				seq = seq[:t+1]
			}
			ended = len(seq) > len(pr) && seq[len(seq)-1] == tokenizer.EOS
			copy(in, seq[:len(seq)-1])
			copy(tg, seq[1:])
			for j := len(pr) - 1; j < len(seq)-1; j++ {
				mk[j] = 1
			}
		}
		b.Inputs = append(b.Inputs, in)
		b.Targets = append(b.Targets, tg)
		b.Mask = append(b.Mask, mk)
		b.Ended = append(b.Ended, ended)
	}
	return b, nil
}

// PadID is the token that fills padded positions: the byte tokenizer's
// PAD, or 0 in a vocabulary too small to hold it (a real model's, whose
// padding is masked out all the same). It must be a valid embedding row:
// an out-of-range one would be garbage that attention's masking does not
// cancel once it is NaN.
func PadID(cfg transformer.Config) int32 {
	if int(tokenizer.PAD) < cfg.Vocab {
		return tokenizer.PAD
	}
	return 0
}

// BucketLen rounds n up to a multiple of 8, capped at maxLen.
func BucketLen(n, maxLen int) int {
	return min(maxLen, (n+7)/8*8)
}

// BatchTensors are a Batch's tensors as the losses that read it declare
// them: inputs, targets and mask, each [rows, length].
var BatchTensors = []optim.Input{
	{Name: "inputs", DType: dtypes.Int32, Axes: []string{"B", "T"}},
	{Name: "targets", DType: dtypes.Int32, Axes: []string{"B", "T"}},
	{Name: "mask", DType: dtypes.Float32, Axes: []string{"B", "T"}},
}

// Tensors returns inputs, targets and mask as GoMLX tensors (BatchTensors).
func (b *Batch) Tensors() []*tensors.Tensor {
	return []*tensors.Tensor{tensors.FromValue(b.Inputs), tensors.FromValue(b.Targets), tensors.FromValue(b.Mask)}
}

// SFTLoss is the mean negative log-likelihood of response tokens, over a Batch.
func SFTLoss(cfg transformer.Config) optim.Loss {
	return optim.Loss{Name: "sft", Inputs: BatchTensors, Fn: func(p map[string]*graph.Node, batch []*graph.Node) (*graph.Node, []*graph.Node) {
		inputs, targets, mask := batch[0], batch[1], batch[2]
		lp := TokenLogProbs(p, cfg, inputs, targets)
		n := graph.Max(graph.ReduceAllSum(mask), graph.ScalarOne(mask.Graph(), dtypes.Float32))
		loss := graph.Neg(graph.Div(graph.ReduceAllSum(graph.Mul(lp, mask)), n))
		return loss, nil
	}}
}

// Engine compiles and runs the policy's graphs on one backend. It is safe for
// concurrent use; graphs compile on first use and are cached.
type Engine struct {
	Backend backends.Backend
	Cfg     transformer.Config
	names   []string
	g       *graphs
	// adapted are the graphs of parameter sets that hold LoRA adapters
	// (graphsOf), by their names and scale.
	adapted *adaptedGraphs
	// meter is told of every graph run (WithProgress); nil for none.
	meter progress.Meter
}

// graphs are the compiled graphs of one set of parameter names, shared by
// an engine's WithProgress views.
type graphs struct {
	names    []string
	cfg      transformer.Config
	once     sync.Once
	logProbs *graph.Exec
	prefill  *graph.Exec
	decode   *graph.Exec
}

type adaptedGraphs struct {
	mu sync.Mutex
	by map[string]*graphs
}

// NewEngine prepares an engine for policies with the parameter names of params.
func NewEngine(b backends.Backend, cfg transformer.Config, params *weights.Set) *Engine {
	names := params.Names()
	return &Engine{Backend: b, Cfg: cfg, names: names, g: &graphs{names: names, cfg: cfg}, adapted: &adaptedGraphs{by: map[string]*graphs{}}}
}

// WithProgress is the engine with its compiled graphs, reporting every
// graph it runs (a prefill, a decode step, a batch of log-probabilities)
// to m and stopping with m's error: one computation's view of an engine
// that others share.
func (e *Engine) WithProgress(m progress.Meter) *Engine {
	v := *e
	v.meter = m
	return &v
}

// Names returns the parameter order of the engine's graphs.
func (e *Engine) Names() []string { return e.names }

// graphsOf returns the compiled graphs that read params: the engine's, or,
// for a policy with LoRA adapters (lora.With: a base and its adapter, the
// base's tensors shared, not merged), graphs that add each adapter to its
// projection at the adapter's scale, compiled once per set of names.
func (e *Engine) graphsOf(params *weights.Set) (*graphs, error) {
	c, ok, err := lora.Of(params)
	if err != nil {
		return nil, err
	}
	g := e.g
	if ok {
		names := params.Names()
		key := fmt.Sprint(c.Scale(), names)
		e.adapted.mu.Lock()
		if g = e.adapted.by[key]; g == nil {
			cfg := e.Cfg
			cfg.LoRAScale = c.Scale()
			g = &graphs{names: names, cfg: cfg}
			e.adapted.by[key] = g
		}
		e.adapted.mu.Unlock()
	}
	g.compile(e.Backend)
	return g, nil
}

func (g *graphs) compile(b backends.Backend) {
	g.once.Do(func() {
		np, cfg := len(g.names), g.cfg
		g.logProbs = graph.MustNewExec(b, func(in []*graph.Node) *graph.Node {
			return TokenLogProbs(transformer.ParamsOf(g.names, in[:np]), cfg, in[np], in[np+1])
		}).SetMaxCache(-1)
		layers := cfg.Layers
		out := func(p transformer.Params, h *graph.Node, ks, vs []*graph.Node) []*graph.Node {
			return append(append([]*graph.Node{head(p, cfg, h, true)}, ks...), vs...)
		}
		g.prefill = graph.MustNewExec(b, func(in []*graph.Node) []*graph.Node {
			p := transformer.ParamsOf(g.names, in[:np])
			h, ks, vs := transformer.Prefill(p, cfg, in[np], in[np+1])
			return out(p, h, ks, vs)
		}).SetMaxCache(-1)
		g.decode = graph.MustNewExec(b, func(in []*graph.Node) []*graph.Node {
			p := transformer.ParamsOf(g.names, in[:np])
			kc, vc := in[np+2:np+2+layers], in[np+2+layers:np+2+2*layers]
			h, ks, vs := transformer.DecodeStep(p, cfg, in[np], in[np+1], kc, vc)
			return out(p, h, ks, vs)
		}).SetMaxCache(-1)
	})
}

// LogProbs returns per-token log-probabilities [rows][MaxLen] of a batch.
func (e *Engine) LogProbs(params *weights.Set, b *Batch) ([][]float32, error) {
	g, err := e.graphsOf(params)
	if err != nil {
		return nil, fmt.Errorf("log-probs: %w", err)
	}
	args, err := params.Args(g.names)
	if err != nil {
		return nil, fmt.Errorf("log-probs: policy parameters: %w", err)
	}
	out, err := g.logProbs.Exec1(append(args, tensors.FromValue(b.Inputs), tensors.FromValue(b.Targets))...)
	if err != nil {
		return nil, fmt.Errorf("log-probs: %w", err)
	}
	defer out.FinalizeAll()
	if err := progress.Advance(e.meter, 1); err != nil {
		return nil, err
	}
	flat := tensors.MustCopyFlatData[float32](out)
	t := len(b.Inputs[0])
	res := make([][]float32, len(b.Inputs))
	for i := range res {
		res[i] = flat[i*t : (i+1)*t]
	}
	return res, nil
}

// LogProbsOfBoth returns the log-probabilities of a batch under two
// parameter sets, a policy and its reference, computing them at once: the
// pure-Go backend leaves a core idle through much of one graph's small ops.
// Each result is what LogProbs returns.
func (e *Engine) LogProbsOfBoth(p, q *weights.Set, b *Batch) (lp, lq [][]float32, err error) {
	var errQ error
	var wg sync.WaitGroup
	wg.Go(func() { lq, errQ = e.LogProbs(q, b) })
	lp, err = e.LogProbs(p, b)
	wg.Wait()
	return lp, lq, errors.Join(err, errQ)
}

// SampleOptions control generation.
type SampleOptions struct {
	Temperature float64 // 0 means greedy
	TopP        float64 // nucleus sampling mass, (0, 1]
	MaxTokens   int     // response tokens at most, EOS included
	// Stop are the tokens that end a response (EOS); nil means the bundled
	// byte tokenizer's EOS.
	Stop []int32
	// Turn is how the model's chat template ends an assistant turn: not
	// sampled, it completes what the reward model reads (lm.Codec.Trailer).
	Turn Turn
}

// Turn is a chat template's end of an assistant turn: the token that ends
// it (one of the Stop tokens) and what the template writes after that
// token (ChatML's newline after <|im_end|>). A response that stopped at End
// is read by the reward model with Trailer after it, as the reward model's
// training sequences (whole rendered turns) have it. The zero Turn has no
// trailer.
type Turn struct {
	End     int32
	Trailer []int32
}

// Complete is a sampled response as the rest of its turn completes it.
func (t Turn) Complete(s Sample) []int32 {
	if len(t.Trailer) == 0 || !s.Ended || len(s.Tokens) == 0 || s.Tokens[len(s.Tokens)-1] != t.End {
		return s.Tokens
	}
	return append(append(make([]int32, 0, len(s.Tokens)+len(t.Trailer)), s.Tokens...), t.Trailer...)
}

func (o SampleOptions) stops(tok int32) bool {
	if o.Stop == nil {
		return tok == tokenizer.EOS
	}
	return slices.Contains(o.Stop, tok)
}

// Sample is one generated response.
type Sample struct {
	Tokens []int32 // response tokens, ending in EOS when Ended
	Ended  bool
	// LogProbs are log pi(token) under the untempered distribution at sampling time.
	LogProbs []float32
}

// Sequence is the prompt followed by the sampled tokens: exactly what the
// reward model scores and the log-probabilities are taken of. Generate
// stops at the model's max_len, so it always fits.
func (s Sample) Sequence(prompt []int32) []int32 {
	return append(append(make([]int32, 0, len(prompt)+len(s.Tokens)), prompt...), s.Tokens...)
}

// Generate samples one response per prompt, batchSize rows at a time (the last
// chunk is padded, so every call runs the same compiled graph). A response
// ends at EOS, after opts.MaxTokens tokens, or when prompt and response
// fill the model's MaxLen, whichever comes first, so every sample's
// Sequence fits the model. Sampling draws from rng only, so a seeded rng
// reproduces the samples exactly.
func (e *Engine) Generate(params *weights.Set, prompts [][]int32, batchSize int, opts SampleOptions, rng *rand.Rand) ([]Sample, error) {
	return e.generate(params, prompts, batchSize, opts, func(int) *rand.Rand { return rng })
}

// GenerateEach is Generate with a random stream per prompt: row i draws
// from rngs[i] only, so a row's sample does not depend on which rows share
// its batch's random stream. With the same chunks of batchSize rows (the
// computation of a row depends on its chunk's padding), it is the same
// whichever chunks a caller generates together.
func (e *Engine) GenerateEach(params *weights.Set, prompts [][]int32, batchSize int, opts SampleOptions, rngs []*rand.Rand) ([]Sample, error) {
	if len(rngs) != len(prompts) {
		return nil, fmt.Errorf("generate: %d random streams for %d prompts", len(rngs), len(prompts))
	}
	return e.generate(params, prompts, batchSize, opts, func(i int) *rand.Rand { return rngs[i] })
}

// generate samples every prompt; rngOf gives prompt i's random stream.
func (e *Engine) generate(params *weights.Set, prompts [][]int32, batchSize int, opts SampleOptions, rngOf func(int) *rand.Rand) ([]Sample, error) {
	d, err := e.Decoding(params)
	if err != nil {
		return nil, err
	}
	var out []Sample
	for start := 0; start < len(prompts); start += batchSize {
		end := min(start+batchSize, len(prompts))
		s, err := d.sampleChunk(prompts[start:end], batchSize, opts, func(b int) *rand.Rand { return rngOf(start + b) })
		if err != nil {
			return nil, err
		}
		out = append(out, s...)
	}
	return out, nil
}

// Decoding is a parameter set made ready for generation: the decode graph
// reads the projections transposed (see transformer.DecodeStep), so they
// are transposed once here, not at every step.
type Decoding struct {
	e    *Engine
	g    *graphs
	args []any
}

// Decoding prepares params for Prefill and decoding steps.
func (e *Engine) Decoding(params *weights.Set) (*Decoding, error) {
	g, err := e.graphsOf(params)
	if err != nil {
		return nil, fmt.Errorf("generate: %w", err)
	}
	names := transformer.Projections(e.Cfg)
	if !e.Cfg.TiedEmbeddings {
		names = append(names, LMHead)
	}
	dp, err := transformer.TransposeProjections(params, names)
	if err != nil {
		return nil, fmt.Errorf("generate: %w", err)
	}
	args, err := dp.Args(g.names)
	if err != nil {
		return nil, fmt.Errorf("generate: policy parameters: %w", err)
	}
	return &Decoding{e: e, g: g, args: args}, nil
}

// Decoder is one batch being generated: its rows' KV caches and the
// next-token logits of every row. Close releases the caches.
type Decoder struct {
	d      *Decoding
	rows   int
	pads   *tensors.Tensor
	caches []*tensors.Tensor // per layer K [rows,KV,s,Dh], then V [rows,KV,Dh,s]
	// Logits are the next-token logits, rows x Vocab, row-major.
	Logits []float32
}

// Prefill runs the prompts (each at least one token, shorter than
// MaxLen) through the model in one pass, in a batch of rows rows (rows
// beyond the prompts pad the batch), and returns the decoder holding
// their caches and the logits of each row's next token. The prompts are
// left-padded to the longest, so that every row's next token comes at the
// same step; each row's positions start at its first real token and its
// padding is masked out.
func (d *Decoding) Prefill(prompts [][]int32, rows int) (*Decoder, error) {
	cfg := d.e.Cfg
	if len(prompts) > rows {
		return nil, fmt.Errorf("prefill: %d prompts exceed the batch of %d rows", len(prompts), rows)
	}
	pad := PadID(cfg)
	longest := 1
	for _, p := range prompts {
		if len(p) == 0 || len(p) >= cfg.MaxLen {
			return nil, fmt.Errorf("generate: prompt of %d tokens does not fit max_len %d", len(p), cfg.MaxLen)
		}
		longest = max(longest, len(p))
	}
	tokens := make([][]int32, rows)
	pads := make([]int32, rows)
	for b := range tokens {
		tokens[b] = make([]int32, longest)
		var p []int32
		if b < len(prompts) {
			p = prompts[b]
		}
		pads[b] = int32(longest - len(p))
		for j := range tokens[b] {
			tokens[b][j] = pad
		}
		copy(tokens[b][longest-len(p):], p)
		if len(p) == 0 {
			pads[b] = int32(longest - 1) // a batch-padding row: one "real" token
		}
	}
	padT := tensors.FromValue(pads)
	outs, err := d.g.prefill.Exec(append(append([]any(nil), d.args...), tensors.FromValue(tokens), padT)...)
	if err != nil {
		padT.FinalizeAll()
		return nil, fmt.Errorf("prefill: %w", err)
	}
	dec := &Decoder{d: d, rows: rows, pads: padT, caches: outs[1:], Logits: tensors.MustCopyFlatData[float32](outs[0])}
	outs[0].FinalizeAll()
	if err := progress.Advance(d.e.meter, 1); err != nil {
		dec.Close()
		return nil, err
	}
	return dec, nil
}

// Step feeds one token per row (rows that are done feed any valid token;
// their outputs are ignored) and replaces Logits with the next ones.
func (dec *Decoder) Step(tokens []int32) error {
	if len(tokens) != dec.rows {
		return fmt.Errorf("decode step: %d tokens for %d rows", len(tokens), dec.rows)
	}
	args := append(append([]any(nil), dec.d.args...), tensors.FromValue(tokens), dec.pads)
	for _, c := range dec.caches {
		args = append(args, c)
	}
	outs, err := dec.d.g.decode.Exec(args...)
	if err != nil {
		return err
	}
	for _, c := range dec.caches {
		c.FinalizeAll()
	}
	dec.caches = outs[1:]
	dec.Logits = tensors.MustCopyFlatData[float32](outs[0])
	outs[0].FinalizeAll()
	return progress.Advance(dec.d.e.meter, 1)
}

// Close releases the decoder's caches.
func (dec *Decoder) Close() {
	for _, c := range dec.caches {
		c.FinalizeAll()
	}
	dec.caches = nil
	dec.pads.FinalizeAll()
}

// sampleChunk generates one chunk of at most rows prompts: the prefill,
// which gives every row's first token, then a decode step per token.
// Row b draws from rngOf(b).
func (d *Decoding) sampleChunk(prompts [][]int32, rows int, opts SampleOptions, rngOf func(int) *rand.Rand) ([]Sample, error) {
	cfg := d.e.Cfg
	dec, err := d.Prefill(prompts, rows)
	if err != nil {
		return nil, err
	}
	defer dec.Close()
	// Rows that are done (or pad the batch) keep feeding a token whose
	// outputs are ignored.
	pad := PadID(cfg)
	samples := make([]Sample, len(prompts))
	done := make([]bool, rows)
	cur := make([]int32, rows)
	for b := len(prompts); b < rows; b++ {
		done[b], cur[b] = true, pad
	}
	probs := make([]float64, cfg.Vocab)
	for step := 0; ; step++ {
		allDone := true
		for b := 0; b < rows; b++ {
			if done[b] {
				cur[b] = pad
				continue
			}
			row := dec.Logits[b*cfg.Vocab : (b+1)*cfg.Vocab]
			tok := sampleToken(row, probs, opts, rngOf(b))
			samples[b].Tokens = append(samples[b].Tokens, tok)
			samples[b].LogProbs = append(samples[b].LogProbs, logSoftmaxAt(row, tok))
			switch {
			case opts.stops(tok):
				samples[b].Ended = true
				done[b] = true
			case len(samples[b].Tokens) >= opts.MaxTokens || len(prompts[b])+len(samples[b].Tokens) >= cfg.MaxLen: // the sequence fills MaxLen
				done[b] = true
			}
			cur[b] = tok
			if !done[b] {
				allDone = false
			}
		}
		if allDone {
			break
		}
		if err := dec.Step(cur); err != nil {
			return nil, fmt.Errorf("decode step %d: %w", step, err)
		}
	}
	return samples, nil
}
