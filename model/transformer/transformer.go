// Package transformer is the decoder-only transformer under alignflow's
// policy and reward models: the bundled byte-level model and the
// Llama-family models loaded from Hugging Face (Llama 2 and 3, Mistral,
// Qwen2). Token embeddings feed pre-norm blocks, each causal self-attention
// then an MLP, and a final RMSNorm; the heads on top (language model,
// reward) belong to policy and reward. Config holds the architecture,
// recorded in every checkpoint: grouped-query attention (KVHeads), the head
// width, rotary position embeddings with their base and scaling (Llama
// 3.1's llama3, or linear), RMSNorm's epsilon, the SiLU MLP gated or not,
// query/key/value and output-projection biases and tied embeddings.
// InitBackbone draws a fresh backbone from a seed.
//
// One block, with one causal mask and one rotary path, serves three
// forwards. Hidden is the full pass over [B,T] tokens that training
// differentiates and scoring reads. Prefill runs a left-padded batch of
// prompts and returns the KV cache, and DecodeStep extends it by one token
// per row; both read the projections transposed (TransposeProjections) and
// keep V transposed, the layouts the pure-Go backend multiplies fastest.
// The layouts are the only difference, so a token's logits agree between
// the full and the cached forwards up to float32 summation order.
//
// Attention is written here rather than taken from GoMLX's layers because
// those scale scores twice and cannot mask a query shorter than its keys,
// which a KV cache needs. ops.go holds the softmaxes and the broadcasts
// that keep the pure-Go backend's elementwise ops on equal shapes.
package transformer

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/gomlx/gomlx/pkg/core/dtypes"
	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/shapes"

	"github.com/alignflow/alignflow/model/backend"
	"github.com/alignflow/alignflow/model/weights"
)

// Config is the architecture. It is saved with every checkpoint. The fields
// after MaxLen describe Llama-family models (Llama 2 and 3, Mistral,
// Qwen2); left zero they are the bundled byte-level model's choices, so its
// checkpoints and graphs are unchanged.
type Config struct {
	Vocab  int `json:"vocab"`
	Dim    int `json:"dim"`
	Heads  int `json:"heads"`
	Layers int `json:"layers"`
	Hidden int `json:"hidden"`  // MLP width
	MaxLen int `json:"max_len"` // longest sequence, prompt and response together

	// KVHeads is the number of key/value heads (grouped-query attention);
	// 0 means Heads.
	KVHeads int `json:"kv_heads,omitempty"`
	// HeadSize is the width of a head; 0 means Dim/Heads.
	HeadSize int `json:"head_dim,omitempty"`
	// RopeTheta is the rotary base; 0 means 10000.
	RopeTheta float64 `json:"rope_theta,omitempty"`
	// RopeScaling stretches the rotary frequencies (Llama 3.1's "llama3",
	// or "linear"); nil for none.
	RopeScaling *RopeScaling `json:"rope_scaling,omitempty"`
	// NormEps is RMSNorm's epsilon; 0 means 1e-6.
	NormEps float64 `json:"norm_eps,omitempty"`
	// GatedMLP is Llama's SiLU-gated MLP, down(silu(gate(x)) * up(x)),
	// instead of the bundled down(silu(up(x))).
	GatedMLP bool `json:"gated_mlp,omitempty"`
	// QKVBias adds biases to the query, key and value projections (Qwen2,
	// and Llama with attention_bias).
	QKVBias bool `json:"qkv_bias,omitempty"`
	// OBias adds a bias to the attention's output projection (Llama with
	// attention_bias, which transformers' LlamaAttention puts on q, k, v
	// and o_proj alike).
	OBias bool `json:"o_bias,omitempty"`
	// TiedEmbeddings reads the logits off the embedding matrix instead of a
	// separate language-model head.
	TiedEmbeddings bool `json:"tied_embeddings,omitempty"`

	// LoRAScale is the scale (alpha / rank) of the LoRA adapters a graph's
	// parameters hold (see Params.linear); 0 where they hold none. It
	// belongs to a graph, not to the architecture, so checkpoints never
	// record it: an adapter's own metadata does (model/lora).
	LoRAScale float64 `json:"-"`
	// LoRADropout is PEFT's lora_dropout in a training graph: each
	// adapter reads its input through inverted dropout, zeroing each
	// value with this probability and scaling the rest by 1/(1-p), with
	// random numbers from the state Params hold under DropoutRNG. 0 in
	// every graph that does not train (PEFT's eval mode).
	LoRADropout float64 `json:"-"`
}

// RopeScaling is config.json's rope_scaling of the kinds alignflow applies.
type RopeScaling struct {
	Type   string  `json:"rope_type"` // "llama3" or "linear"
	Factor float64 `json:"factor"`
	// LowFreqFactor, HighFreqFactor and OriginalMaxPositions are llama3's.
	LowFreqFactor        float64 `json:"low_freq_factor,omitempty"`
	HighFreqFactor       float64 `json:"high_freq_factor,omitempty"`
	OriginalMaxPositions int     `json:"original_max_position_embeddings,omitempty"`
}

// Rope scaling types.
const (
	RopeLlama3 = "llama3"
	RopeLinear = "linear"
)

// Validate reports the first inconsistent field.
func (c Config) Validate() error {
	switch {
	case c.Vocab <= 0:
		return fmt.Errorf("vocab must be positive, got %d", c.Vocab)
	case c.Dim <= 0 || c.Heads <= 0:
		return fmt.Errorf("dim (%d) and heads (%d) must be positive", c.Dim, c.Heads)
	case c.HeadSize == 0 && c.Dim%c.Heads != 0:
		return fmt.Errorf("dim (%d) must be a multiple of heads (%d)", c.Dim, c.Heads)
	case c.HeadDim() <= 0 || c.HeadDim()%2 != 0:
		return fmt.Errorf("the head width (%d) must be even for rotary embeddings", c.HeadDim())
	case c.KVHeads < 0 || c.Heads%c.KVHeadCount() != 0:
		return fmt.Errorf("heads (%d) must be a multiple of kv_heads (%d)", c.Heads, c.KVHeads)
	case c.Layers <= 0:
		return fmt.Errorf("layers must be positive, got %d", c.Layers)
	case c.Hidden <= 0:
		return fmt.Errorf("hidden must be positive, got %d", c.Hidden)
	case c.MaxLen <= 1:
		return fmt.Errorf("max_len must be at least 2, got %d", c.MaxLen)
	case c.RopeTheta < 0 || c.NormEps < 0:
		return fmt.Errorf("rope_theta (%v) and norm_eps (%v) must not be negative", c.RopeTheta, c.NormEps)
	}
	if r := c.RopeScaling; r != nil {
		switch {
		case r.Type != RopeLlama3 && r.Type != RopeLinear:
			return fmt.Errorf("rope_scaling type %q is not supported (supported: %s, %s)", r.Type, RopeLlama3, RopeLinear)
		case !(r.Factor > 0):
			return fmt.Errorf("rope_scaling factor must be positive, got %v", r.Factor)
		case r.Type == RopeLlama3 && !(r.HighFreqFactor > r.LowFreqFactor && r.LowFreqFactor > 0 && r.OriginalMaxPositions > 0):
			return fmt.Errorf("rope_scaling llama3 needs 0 < low_freq_factor < high_freq_factor and original_max_position_embeddings, got %+v", *r)
		}
	}
	return nil
}

// HeadDim is the width of one attention head.
func (c Config) HeadDim() int {
	if c.HeadSize > 0 {
		return c.HeadSize
	}
	return c.Dim / c.Heads
}

// KVHeadCount is the number of key/value heads.
func (c Config) KVHeadCount() int {
	if c.KVHeads > 0 {
		return c.KVHeads
	}
	return c.Heads
}

func (c Config) theta() float64 {
	if c.RopeTheta > 0 {
		return c.RopeTheta
	}
	return 10000
}

func (c Config) eps() float64 {
	if c.NormEps > 0 {
		return c.NormEps
	}
	return 1e-6
}

// frequencies are the rotary frequencies of the head's dimension pairs,
// scaled as RopeScaling says (as transformers' rope init functions do).
func (c Config) frequencies() []float64 {
	d := c.HeadDim()
	out := make([]float64, d/2)
	for i := range out {
		out[i] = math.Pow(c.theta(), -float64(2*i)/float64(d))
	}
	r := c.RopeScaling
	switch {
	case r == nil:
	case r.Type == RopeLinear:
		for i := range out {
			out[i] /= r.Factor
		}
	case r.Type == RopeLlama3:
		old := float64(r.OriginalMaxPositions)
		lowWavelen, highWavelen := old/r.LowFreqFactor, old/r.HighFreqFactor
		for i, f := range out {
			wavelen := 2 * math.Pi / f
			switch {
			case wavelen < highWavelen:
			case wavelen > lowWavelen:
				out[i] = f / r.Factor
			default:
				smooth := (old/wavelen - r.LowFreqFactor) / (r.HighFreqFactor - r.LowFreqFactor)
				out[i] = (1-smooth)*f/r.Factor + smooth*f
			}
		}
	}
	return out
}

// Parameter names shared by every model built on the backbone.
const (
	Embed     = "embed"
	FinalNorm = "final_norm"
)

func layerName(l int, part string) string { return fmt.Sprintf("layer%d.%s", l, part) }

// LayerParam is the name of layer l's parameter part ("wq", "w1", ...).
func LayerParam(l int, part string) string { return layerName(l, part) }

// The suffixes of a LoRA adapter's two matrices of a projection W [in, out]
// (layer0.wq.lora_a, layer0.wq.lora_b): A [in, rank] and B [rank, out],
// PEFT's lora_A.weight and lora_B.weight transposed into the checkpoints'
// [in, out] layout.
const (
	LoRAA = ".lora_a"
	LoRAB = ".lora_b"
)

// DropoutRNG names the random state (graph.RNGStateShape) among the
// Params of a graph with LoRA dropout; each adapter draws from it and
// leaves the next state there, in the graph's order of layers.
const DropoutRNG = "lora.dropout_rng"

// MetaConfig is the metadata key holding the JSON Config in a checkpoint.
const MetaConfig = "transformer_config"

// InitBackbone returns freshly initialised backbone parameters, seeded.
func InitBackbone(cfg Config, seed uint64) *weights.Set {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	s := weights.NewSet()
	normal := func(std float64, shape ...int) *weights.Tensor {
		t := weights.NewTensor(shape...)
		for i := range t.Data {
			t.Data[i] = float32(r.NormFloat64() * std)
		}
		return t
	}
	ones := func(n int) *weights.Tensor {
		t := weights.NewTensor(n)
		for i := range t.Data {
			t.Data[i] = 1
		}
		return t
	}
	d := cfg.Dim
	qd, kvd := cfg.Heads*cfg.HeadDim(), cfg.KVHeadCount()*cfg.HeadDim()
	inStd := 1 / math.Sqrt(float64(d))
	outStd := inStd / math.Sqrt(2*float64(cfg.Layers))
	s.Put(Embed, normal(0.1, cfg.Vocab, d))
	for l := 0; l < cfg.Layers; l++ {
		s.Put(layerName(l, "attn_norm"), ones(d))
		s.Put(layerName(l, "wq"), normal(inStd, d, qd))
		s.Put(layerName(l, "wk"), normal(inStd, d, kvd))
		s.Put(layerName(l, "wv"), normal(inStd, d, kvd))
		s.Put(layerName(l, "wo"), normal(outStd, qd, d))
		s.Put(layerName(l, "mlp_norm"), ones(d))
		s.Put(layerName(l, "w1"), normal(inStd, d, cfg.Hidden))
		s.Put(layerName(l, "w2"), normal(outStd*math.Sqrt(float64(d)/float64(cfg.Hidden)), cfg.Hidden, d))
		// Drawn after the bundled model's tensors, which so stay as they were.
		if cfg.GatedMLP {
			s.Put(layerName(l, "w3"), normal(inStd, d, cfg.Hidden))
		}
		if cfg.QKVBias {
			s.Put(layerName(l, "bq"), weights.NewTensor(qd))
			s.Put(layerName(l, "bk"), weights.NewTensor(kvd))
			s.Put(layerName(l, "bv"), weights.NewTensor(kvd))
		}
		if cfg.OBias {
			s.Put(layerName(l, "bo"), weights.NewTensor(d))
		}
	}
	s.Put(FinalNorm, ones(d))
	SetConfig(s, cfg)
	return s
}

// SetConfig records cfg in the set's metadata.
func SetConfig(s *weights.Set, cfg Config) {
	b, _ := json.Marshal(cfg)
	s.Metadata[MetaConfig] = string(b)
}

// ConfigOf reads the architecture recorded in a checkpoint.
func ConfigOf(s *weights.Set) (Config, error) {
	var cfg Config
	raw, ok := s.Metadata[MetaConfig]
	if !ok {
		return cfg, fmt.Errorf("checkpoint has no %s metadata", MetaConfig)
	}
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		return cfg, fmt.Errorf("checkpoint %s metadata: %w", MetaConfig, err)
	}
	return cfg, cfg.Validate()
}

// Params maps parameter names to graph nodes, as optim.LossFn receives them.
type Params map[string]*graph.Node

// ParamsOf maps names to the graph's parameter nodes in the same order: the
// graph side of weights.Set.Args.
func ParamsOf(names []string, nodes []*graph.Node) Params {
	p := make(Params, len(names))
	for i, n := range names {
		p[n] = nodes[i]
	}
	return p
}

func (p Params) get(name string) *graph.Node {
	n, ok := p[name]
	if !ok {
		panic(fmt.Sprintf("transformer: parameter %q missing", name))
	}
	return n
}

// rmsNorm normalises the last axis and scales it by gain.
func rmsNorm(x, gain *graph.Node, eps float64) *graph.Node {
	d := x.Shape().Dimensions[x.Rank()-1]
	lead := x.Shape().Dimensions[:x.Rank()-1]
	ms := graph.ReduceMean(graph.Square(x), -1)
	// Rsqrt has no gradient in GoMLX v0.26.0; Sqrt does.
	inv := graph.Inverse(graph.Sqrt(graph.AddScalar(ms, eps)))
	return graph.Mul(graph.Mul(x, ExpandLast(inv, d)), graph.BroadcastPrefix(gain, lead...))
}

// ropeTables returns cos and sin tables [n, headDim] of positions 0..n-1
// (the two halves of each row repeat the same frequencies) and the
// rotate-half matrix. A position's row does not depend on n.
func ropeTables(g *graph.Graph, cfg Config, n int) (cos, sin, rot *graph.Node) {
	headDim := cfg.HeadDim()
	half := headDim / 2
	freqs := cfg.frequencies()
	c := make([]float32, n*headDim)
	s := make([]float32, n*headDim)
	for p := 0; p < n; p++ {
		for i := 0; i < half; i++ {
			a := float64(p) * freqs[i]
			c[p*headDim+i], c[p*headDim+i+half] = float32(math.Cos(a)), float32(math.Cos(a))
			s[p*headDim+i], s[p*headDim+i+half] = float32(math.Sin(a)), float32(math.Sin(a))
		}
	}
	// rotate_half(x) = [-x2, x1] as x @ R: R[i+half][i] = -1, R[i][i+half] = 1.
	r := make([]float32, headDim*headDim)
	for i := 0; i < half; i++ {
		r[(i+half)*headDim+i] = -1
		r[i*headDim+i+half] = 1
	}
	cos = graph.Reshape(graph.Const(g, c), n, headDim)
	sin = graph.Reshape(graph.Const(g, s), n, headDim)
	rot = graph.Reshape(graph.Const(g, r), headDim, headDim)
	return
}

// rotary is the rotary embedding of a forward's query positions: cos and
// sin [T,Dh], the same for every row, or [B,T,Dh], per row, and the
// rotate-half matrix.
type rotary struct{ cos, sin, rot *graph.Node }

// rotaryAt gathers the rotary tables at positions pos, [T] or [B,T] int32,
// each below n.
func rotaryAt(cfg Config, pos *graph.Node, n int) rotary {
	cos, sin, rot := ropeTables(pos.Graph(), cfg, n)
	idx := graph.InsertAxes(pos, -1)
	return rotary{cos: graph.Gather(cos, idx), sin: graph.Gather(sin, idx), rot: rot}
}

// apply rotates x [B,H,T,Dh]: x*cos + rotate_half(x)*sin.
func (r rotary) apply(x *graph.Node) *graph.Node {
	d := x.Shape().Dimensions
	c, s := spreadOverHeads(r.cos, d[0], d[1]), spreadOverHeads(r.sin, d[0], d[1])
	return graph.Add(graph.Mul(x, c), graph.Mul(backend.Linear(x, r.rot), s))
}

// splitHeads turns [B,T,H*Dh] into [B,H,T,Dh].
func splitHeads(x *graph.Node, heads int) *graph.Node {
	dims := x.Shape().Dimensions
	b, t, d := dims[0], dims[1], dims[2]
	return graph.TransposeAllAxes(graph.Reshape(x, b, t, heads, d/heads), 0, 2, 1, 3)
}

// mergeHeads turns [B,H,T,Dh] into [B,T,D].
func mergeHeads(x *graph.Node) *graph.Node {
	dims := x.Shape().Dimensions
	b, h, t, dh := dims[0], dims[1], dims[2], dims[3]
	return graph.Reshape(graph.TransposeAllAxes(x, 0, 2, 1, 3), b, t, h*dh)
}

// attend computes softmax(q k^T / sqrt(Dh) + bias) v for q [B,H,T,Dh],
// k [B,KV,S,Dh], v [B,KV,S,Dh] with its S axis at vSeqAxis 2, or transposed
// [B,KV,Dh,S] with vSeqAxis 3, and an additive bias [T,S] or, per row,
// [B,T,S].
// With fewer key/value heads than query heads (grouped-query attention),
// key/value head j serves query heads j*H/KV up to (j+1)*H/KV - 1, as
// transformers' repeat_kv does.
func attend(q, k, v *graph.Node, vSeqAxis int, bias *graph.Node) *graph.Node {
	dims := q.Shape().Dimensions
	b, h, t, dh := dims[0], dims[1], dims[2], dims[3]
	kv := k.Shape().Dimensions[1]
	if kv != h {
		rep := h / kv
		q5 := graph.Reshape(q, b, kv, rep, t, dh)
		scores := backend.Dot(q5, []int{4}, []int{0, 1}, k, []int{3}, []int{0, 1}) // [B,KV,rep,T,S]
		scores = graph.MulScalar(scores, 1/math.Sqrt(float64(dh)))
		scores = graph.Add(scores, spreadOverHeads(bias, b, kv, rep))
		probs := Softmax(scores)
		out := backend.Dot(probs, []int{4}, []int{0, 1}, v, []int{vSeqAxis}, []int{0, 1}) // [B,KV,rep,T,Dh]
		return graph.Reshape(out, b, h, t, dh)
	}
	scores := backend.Dot(q, []int{3}, []int{0, 1}, k, []int{3}, []int{0, 1})
	scores = graph.MulScalar(scores, 1/math.Sqrt(float64(dims[3])))
	scores = graph.Add(scores, spreadOverHeads(bias, dims[0], dims[1]))
	probs := Softmax(scores)
	return backend.Dot(probs, []int{3}, []int{0, 1}, v, []int{vSeqAxis}, []int{0, 1})
}

// spreadOverHeads broadcasts x [T,S], the same for every row, or [B,T,S],
// per row, over the batch b and the head axes: an attention mask over the
// scores, a rotary table over the queries or keys.
func spreadOverHeads(x *graph.Node, b int, heads ...int) *graph.Node {
	if x.Rank() == 2 {
		return graph.BroadcastPrefix(x, append([]int{b}, heads...)...)
	}
	d := x.Shape().Dimensions
	for range heads {
		x = graph.InsertAxes(x, 1)
	}
	return graph.BroadcastToDims(x, append(append([]int{b}, heads...), d[1], d[2])...)
}

// mlp is the MLP of layer l, gated or not, in lay's layout.
func mlp(p Params, cfg Config, l int, x *graph.Node, lay layout) *graph.Node {
	u := p.linear(cfg, lay, layerName(l, "w1"), x)
	h := graph.Mul(u, graph.Sigmoid(u)) // SiLU
	if cfg.GatedMLP {
		h = graph.Mul(h, p.linear(cfg, lay, layerName(l, "w3"), x))
	}
	return p.linear(cfg, lay, layerName(l, "w2"), h)
}

// linear multiplies x by the named projection in lay's layout and, where p
// holds a LoRA adapter of it (name+LoRAA, name+LoRAB), adds the adapter's
// cfg.LoRAScale * (dropout(x) A) B, as PEFT's LoRA layer adds
// lora_B(lora_A(dropout(x))) * scaling to the base layer's output
// (peft/tuners/lora/layer.py, Linear.forward). The adapter is in the
// checkpoints' layout in either layout of the base.
func (p Params) linear(cfg Config, lay layout, name string, x *graph.Node) *graph.Node {
	y := lay.linear(x, p.get(name))
	a, ok := p[name+LoRAA]
	if !ok {
		return y
	}
	if cfg.LoRAScale == 0 {
		panic(fmt.Sprintf("transformer: %s has a LoRA adapter but the graph's config has no LoRA scale", name))
	}
	if cfg.LoRADropout > 0 {
		x = p.dropout(x, cfg.LoRADropout)
	}
	low := backend.Linear(backend.Linear(x, a), p.get(name+LoRAB))
	return graph.Add(y, graph.MulScalar(low, cfg.LoRAScale))
}

// dropout is torch's nn.Dropout in training mode (PEFT's lora_dropout):
// each value of x is zeroed with probability rate, the rest scaled by
// 1/(1-rate), drawn from p's DropoutRNG state, which it advances.
func (p Params) dropout(x *graph.Node, rate float64) *graph.Node {
	state, ok := p[DropoutRNG]
	if !ok {
		panic("transformer: LoRA dropout needs a random state in the parameters (" + DropoutRNG + ")")
	}
	next, u := graph.RandomUniform(state, x.Shape())
	p[DropoutRNG] = next
	keep := graph.GreaterOrEqual(u, graph.Scalar(x.Graph(), x.DType(), rate))
	return graph.Where(keep, graph.MulScalar(x, 1/(1-rate)), graph.ZerosLike(x))
}

// project is x times the projection part of layer l, plus its bias where
// the model has one (bq, bk, bv; bo).
func project(p Params, cfg Config, l int, part string, x *graph.Node, lay layout) *graph.Node {
	y := p.linear(cfg, lay, layerName(l, part), x)
	if cfg.QKVBias && (part == "wq" || part == "wk" || part == "wv") || cfg.OBias && part == "wo" {
		bias := p.get(layerName(l, "b"+part[1:]))
		y = graph.Add(y, graph.BroadcastPrefix(bias, y.Shape().Dimensions[:y.Rank()-1]...))
	}
	return y
}

// negInf is the additive mask value: large enough to zero a softmax weight,
// small enough to stay finite in float32 arithmetic.
const negInf = -1e9

// causalMask is the additive mask [T,T] that keeps each of T queries from
// the keys after it: 0 on and below the diagonal, negInf above.
func causalMask(g *graph.Graph, t int) *graph.Node {
	m := make([]float32, t*t)
	for i := 0; i < t; i++ {
		for j := i + 1; j < t; j++ {
			m[i*t+j] = negInf
		}
	}
	return graph.Reshape(graph.Const(g, m), t, t)
}

// padBias is the additive attention mask [B,S] of left padding: 0 for a
// row's real positions, negInf for its first pads[b].
func padBias(pads *graph.Node, s int) *graph.Node {
	g := pads.Graph()
	b := pads.Shape().Dimensions[0]
	iota := graph.Iota(g, shapes.Make(dtypes.Int32, b, s), 1)
	real := graph.GreaterOrEqual(iota, graph.BroadcastToDims(graph.InsertAxes(pads, -1), b, s))
	zero := graph.ZerosLike(graph.ConvertDType(iota, dtypes.Float32))
	return graph.Where(real, zero, graph.AddScalar(zero, negInf))
}

// layout is how a forward's graph holds the weights and the values: the one
// thing the full forward and the cached ones do differently. The
// arithmetic is the same; the layouts are kept apart, not converted,
// because a matrix product's summation order, and so its float32 result,
// may follow its operands' layout.
type layout struct {
	// linear multiplies activations by a weight matrix: backend.Linear
	// for [in, out], the checkpoints' layout, or LinearT for [out, in].
	linear func(x, w *graph.Node) *graph.Node
	// vT keeps V transposed, [B,KV,Dh,S], the layout of DecodeStep's cache.
	vT bool
}

var (
	// fullLayout is the checkpoints' own, which gradients flow through.
	fullLayout = layout{linear: backend.Linear}
	// cachedLayout is Prefill's and DecodeStep's (see DecodeStep for why).
	cachedLayout = layout{linear: LinearT, vT: true}
)

// embed looks up the embeddings of tokens [...] int32: [..., D].
func embed(p Params, tokens *graph.Node) *graph.Node {
	return graph.Gather(p.get(Embed), graph.InsertAxes(tokens, -1))
}

// block is layer l over x [B,T,D]: causal self-attention of the normalised
// x added to x, then the MLP of the normalised result added to it. rope
// rotates the queries and keys at their positions; bias [T,S] or [B,T,S]
// masks the attention of the T queries over the S keys, the past ones
// first: kPast and vPast (nil for none) are this layer's keys and values of
// the S-T positions before x's, in lay's layout. It returns x and this
// layer's keys and values of all S positions, the cache a next step reads.
func block(p Params, cfg Config, lay layout, l int, x *graph.Node, rope rotary, bias, kPast, vPast *graph.Node) (out, k, v *graph.Node) {
	eps := cfg.eps()
	kvh := cfg.KVHeadCount()
	h := rmsNorm(x, p.get(layerName(l, "attn_norm")), eps)
	q := rope.apply(splitHeads(project(p, cfg, l, "wq", h, lay), cfg.Heads))
	k = rope.apply(splitHeads(project(p, cfg, l, "wk", h, lay), kvh))
	v = splitHeads(project(p, cfg, l, "wv", h, lay), kvh) // [B,KV,T,Dh]
	vSeqAxis := 2
	if lay.vT {
		v, vSeqAxis = graph.TransposeAllAxes(v, 0, 1, 3, 2), 3 // [B,KV,Dh,T]
	}
	if kPast != nil {
		k = graph.Concatenate([]*graph.Node{kPast, k}, 2)
		v = graph.Concatenate([]*graph.Node{vPast, v}, vSeqAxis)
	}
	a := mergeHeads(attend(q, k, v, vSeqAxis, bias))
	x = graph.Add(x, project(p, cfg, l, "wo", a, lay))
	x = graph.Add(x, mlp(p, cfg, l, rmsNorm(x, p.get(layerName(l, "mlp_norm")), eps), lay))
	return x, k, v
}

// blocks runs every layer's block over x (see block; kPast and vPast hold
// one cache per layer, or are nil) and returns x and every layer's keys
// and values.
func blocks(p Params, cfg Config, lay layout, x *graph.Node, rope rotary, bias *graph.Node, kPast, vPast []*graph.Node) (out *graph.Node, ks, vs []*graph.Node) {
	for l := 0; l < cfg.Layers; l++ {
		var kp, vp, k, v *graph.Node
		if kPast != nil {
			kp, vp = kPast[l], vPast[l]
		}
		x, k, v = block(p, cfg, lay, l, x, rope, bias, kp, vp)
		ks, vs = append(ks, k), append(vs, v)
	}
	return x, ks, vs
}

// Hidden runs the backbone over tokens [B,T] (int32, positions 0..T-1) and
// returns the final normalised hidden states [B,T,D]. Attention is causal, so
// right padding never influences earlier positions.
func Hidden(p Params, cfg Config, tokens *graph.Node) *graph.Node {
	g := tokens.Graph()
	t := tokens.Shape().Dimensions[1]
	pos := graph.Iota(g, shapes.Make(dtypes.Int32, t), 0)
	x, _, _ := blocks(p, cfg, fullLayout, embed(p, tokens), rotaryAt(cfg, pos, t), causalMask(g, t), nil, nil)
	return rmsNorm(x, p.get(FinalNorm), cfg.eps())
}

// Prefill runs the backbone over a left-padded batch of prompts, tokens
// [B,P] int32, whose row b starts with pads[b] ([B] int32) padding tokens,
// and returns the final hidden state at every row's last position [B,D]
// and the KV caches DecodeStep continues from: per layer K [B,KV,P,Dh] and
// V transposed [B,KV,Dh,P]. Positions count from each row's first real
// token and padding is masked out of attention, so a row's results do not
// depend on the other rows. p holds the projections transposed, as
// DecodeStep reads them.
func Prefill(p Params, cfg Config, tokens, pads *graph.Node) (hidden *graph.Node, ks, vs []*graph.Node) {
	g := tokens.Graph()
	dims := tokens.Shape().Dimensions
	b, t := dims[0], dims[1]
	// pos[b,j] = j - pads[b], clamped into the table: padding's values are
	// masked out anyway.
	iota := graph.Iota(g, shapes.Make(dtypes.Int32, b, t), 1)
	pos := graph.Sub(iota, graph.BroadcastToDims(graph.InsertAxes(pads, -1), b, t))
	pos = graph.Max(pos, graph.ScalarZero(g, dtypes.Int32))
	bias := graph.Add(graph.BroadcastPrefix(causalMask(g, t), b), graph.InsertAxes(padBias(pads, t), 1)) // [B,T,T]
	x, ks, vs := blocks(p, cfg, cachedLayout, embed(p, tokens), rotaryAt(cfg, pos, t), bias, nil, nil)
	pick := graph.OneHot(graph.Const(g, int32(t-1)), t, dtypes.Float32) // the last position
	last := backend.Dot(x, []int{1}, nil, pick, []int{0}, nil)          // [B,D]
	return rmsNorm(last, p.get(FinalNorm), cfg.eps()), ks, vs
}

// DecodeStep advances generation by one token per row using the KV cache
// Prefill (or an earlier step) returned. token is [B] int32; pads [B] the
// rows' left padding, as given to Prefill; the caches hold, per layer, K of
// the s positions seen as [B,KV,s,Dh] and V transposed as [B,KV,Dh,s]. The
// new token's position is s - pads[b]. It returns the final hidden state
// [B,D] of the new token and the caches grown to s+1. Growing by
// concatenation keeps every step's work proportional to the tokens seen;
// each length compiles once and is cached.
//
// p holds the projections transposed, [out, in], as TransposeProjections
// returns them, and the V cache is kept transposed: the pure-Go backend
// multiplies with the contracted axis last on both sides and would
// otherwise transpose every weight and the whole V cache at every step.
func DecodeStep(p Params, cfg Config, token, pads *graph.Node, kCache, vCache []*graph.Node) (hidden *graph.Node, newK, newV []*graph.Node) {
	g := token.Graph()
	b := token.Shape().Dimensions[0]
	s := kCache[0].Shape().Dimensions[2]
	pos := graph.Sub(graph.Const(g, int32(s)), pads)                                                        // [B]
	pos = graph.Max(graph.Min(pos, graph.Const(g, int32(cfg.MaxLen-1))), graph.ScalarZero(g, dtypes.Int32)) // done rows run on
	bias := graph.InsertAxes(padBias(pads, s+1), 1)                                                         // [B,1,s+1]: one query, after every key
	x := graph.Reshape(embed(p, token), b, 1, cfg.Dim)
	x, newK, newV = blocks(p, cfg, cachedLayout, x, rotaryAt(cfg, graph.InsertAxes(pos, -1), s+1), bias, kCache, vCache)
	hidden = graph.Reshape(rmsNorm(x, p.get(FinalNorm), cfg.eps()), b, cfg.Dim)
	return hidden, newK, newV
}

// LinearT multiplies the last axis of x by the transpose of wt [out, in].
func LinearT(x, wt *graph.Node) *graph.Node {
	return backend.Dot(x, []int{x.Rank() - 1}, nil, wt, []int{1}, nil)
}

// Projections names the backbone's matrices that multiply activations.
func Projections(cfg Config) []string {
	var names []string
	for l := 0; l < cfg.Layers; l++ {
		for _, part := range []string{"wq", "wk", "wv", "wo", "w1", "w2"} {
			names = append(names, layerName(l, part))
		}
		if cfg.GatedMLP {
			names = append(names, layerName(l, "w3"))
		}
	}
	return names
}

// TransposeProjections returns params with the named matrices transposed to
// [out, in], the layout DecodeStep reads; the other tensors are shared.
func TransposeProjections(params *weights.Set, names []string) (*weights.Set, error) {
	out := weights.NewSet()
	for _, n := range params.Names() {
		out.Put(n, params.Get(n))
	}
	for _, n := range names {
		t := params.Get(n)
		if t == nil || len(t.Shape) != 2 {
			return nil, fmt.Errorf("transpose %s: not a matrix in the parameters", n)
		}
		rows, cols := t.Shape[0], t.Shape[1]
		tt := weights.NewTensor(cols, rows)
		for i := 0; i < rows; i++ {
			for j := 0; j < cols; j++ {
				tt.Data[j*rows+i] = t.Data[i*cols+j]
			}
		}
		out.Put(n, tt)
	}
	return out, nil
}
