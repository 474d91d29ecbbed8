// Package transformer is the decoder-only transformer shared by alignflow's policy
// and reward models: byte embeddings, pre-norm blocks with causal multi-head
// attention (rotary position embeddings), RMSNorm and a SiLU MLP. Attention is
// written here rather than taken from GoMLX's layers because those scale scores
// twice and cannot mask a query shorter than its keys, which a KV cache needs.
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
	// QKVBias adds biases to the query, key and value projections (Qwen2).
	QKVBias bool `json:"qkv_bias,omitempty"`
	// TiedEmbeddings reads the logits off the embedding matrix instead of a
	// separate language-model head.
	TiedEmbeddings bool `json:"tied_embeddings,omitempty"`
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

// ropeTables returns cos and sin tables [maxLen, headDim] (the two halves of
// each row repeat the same frequencies) and the rotate-half matrix.
func ropeTables(g *graph.Graph, cfg Config, maxLen int) (cos, sin, rot *graph.Node) {
	headDim := cfg.HeadDim()
	half := headDim / 2
	freqs := cfg.frequencies()
	c := make([]float32, maxLen*headDim)
	s := make([]float32, maxLen*headDim)
	for p := 0; p < maxLen; p++ {
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
	cos = graph.Reshape(graph.Const(g, c), maxLen, headDim)
	sin = graph.Reshape(graph.Const(g, s), maxLen, headDim)
	rot = graph.Reshape(graph.Const(g, r), headDim, headDim)
	return
}

// applyRope rotates x [B,H,T,Dh] by positions whose tables are cos, sin [T,Dh].
func applyRope(x, cos, sin, rot *graph.Node) *graph.Node {
	dims := x.Shape().Dimensions
	c := graph.BroadcastPrefix(cos, dims[0], dims[1])
	s := graph.BroadcastPrefix(sin, dims[0], dims[1])
	return graph.Add(graph.Mul(x, c), graph.Mul(backend.Linear(x, rot), s))
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
// [B,T,S] (nil for none).
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
		if bias != nil {
			scores = graph.Add(scores, broadcastBias(bias, b, kv, rep))
		}
		probs := Softmax(scores)
		out := backend.Dot(probs, []int{4}, []int{0, 1}, v, []int{vSeqAxis}, []int{0, 1}) // [B,KV,rep,T,Dh]
		return graph.Reshape(out, b, h, t, dh)
	}
	scores := backend.Dot(q, []int{3}, []int{0, 1}, k, []int{3}, []int{0, 1})
	scores = graph.MulScalar(scores, 1/math.Sqrt(float64(dims[3])))
	if bias != nil {
		scores = graph.Add(scores, broadcastBias(bias, dims[0], dims[1]))
	}
	probs := Softmax(scores)
	return backend.Dot(probs, []int{3}, []int{0, 1}, v, []int{vSeqAxis}, []int{0, 1})
}

// broadcastBias spreads an additive mask over the batch and head axes of
// the scores: [T,S] the same for every row, [B,T,S] per row.
func broadcastBias(bias *graph.Node, b int, heads ...int) *graph.Node {
	if bias.Rank() == 2 {
		return graph.BroadcastPrefix(bias, append([]int{b}, heads...)...)
	}
	d := bias.Shape().Dimensions
	for range heads {
		bias = graph.InsertAxes(bias, 1)
	}
	return graph.BroadcastToDims(bias, append(append([]int{b}, heads...), d[1], d[2])...)
}

// mlp is the MLP of layer l, gated or not; linear multiplies by a weight
// matrix (backend.Linear, or LinearT for transposed weights).
func mlp(p Params, cfg Config, l int, x *graph.Node, linear func(x, w *graph.Node) *graph.Node) *graph.Node {
	u := linear(x, p.get(layerName(l, "w1")))
	h := graph.Mul(u, graph.Sigmoid(u)) // SiLU
	if cfg.GatedMLP {
		h = graph.Mul(h, linear(x, p.get(layerName(l, "w3"))))
	}
	return linear(h, p.get(layerName(l, "w2")))
}

// project is x times the projection part of layer l, plus its bias where
// the model has one (bq, bk, bv).
func project(p Params, cfg Config, l int, part string, x *graph.Node, linear func(x, w *graph.Node) *graph.Node) *graph.Node {
	y := linear(x, p.get(layerName(l, part)))
	if cfg.QKVBias && (part == "wq" || part == "wk" || part == "wv") {
		bias := p.get(layerName(l, "b"+part[1:]))
		y = graph.Add(y, graph.BroadcastPrefix(bias, y.Shape().Dimensions[:y.Rank()-1]...))
	}
	return y
}

// negInf is the additive mask value: large enough to zero a softmax weight,
// small enough to stay finite in float32 arithmetic.
const negInf = -1e9

// Hidden runs the backbone over tokens [B,T] (int32, positions 0..T-1) and
// returns the final normalised hidden states [B,T,D]. Attention is causal, so
// right padding never influences earlier positions.
func Hidden(p Params, cfg Config, tokens *graph.Node) *graph.Node {
	g := tokens.Graph()
	dims := tokens.Shape().Dimensions
	t := dims[1]
	eps := cfg.eps()
	x := graph.Gather(p.get(Embed), graph.InsertAxes(tokens, -1))
	cosAll, sinAll, rot := ropeTables(g, cfg, t)
	causal := make([]float32, t*t)
	for i := 0; i < t; i++ {
		for j := i + 1; j < t; j++ {
			causal[i*t+j] = negInf
		}
	}
	bias := graph.Reshape(graph.Const(g, causal), t, t)
	kvh := cfg.KVHeadCount()
	for l := 0; l < cfg.Layers; l++ {
		h := rmsNorm(x, p.get(layerName(l, "attn_norm")), eps)
		q := applyRope(splitHeads(project(p, cfg, l, "wq", h, backend.Linear), cfg.Heads), cosAll, sinAll, rot)
		k := applyRope(splitHeads(project(p, cfg, l, "wk", h, backend.Linear), kvh), cosAll, sinAll, rot)
		v := splitHeads(project(p, cfg, l, "wv", h, backend.Linear), kvh)
		a := mergeHeads(attend(q, k, v, 2, bias))
		x = graph.Add(x, backend.Linear(a, p.get(layerName(l, "wo"))))
		x = graph.Add(x, mlp(p, cfg, l, rmsNorm(x, p.get(layerName(l, "mlp_norm")), eps), backend.Linear))
	}
	return rmsNorm(x, p.get(FinalNorm), eps)
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
	causal := make([]float32, t*t)
	for i := 0; i < t; i++ {
		for j := i + 1; j < t; j++ {
			causal[i*t+j] = negInf
		}
	}
	bias := graph.Add(graph.BroadcastPrefix(graph.Reshape(graph.Const(g, causal), t, t), b), // [B,T,T]
		graph.InsertAxes(padBias(pads, t), 1))
	x := graph.Gather(p.get(Embed), graph.InsertAxes(tokens, -1)) // [B,T,D]
	x, ks, vs = cachedBlocks(p, cfg, x, pos, bias, nil, nil)
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
	bias := graph.InsertAxes(padBias(pads, s+1), 1)                                                         // [B,1,s+1]
	x := graph.Gather(p.get(Embed), graph.InsertAxes(token, -1))                                            // [B,D]
	x = graph.Reshape(x, b, 1, cfg.Dim)
	x, newK, newV = cachedBlocks(p, cfg, x, graph.InsertAxes(pos, -1), bias, kCache, vCache)
	hidden = graph.Reshape(rmsNorm(x, p.get(FinalNorm), cfg.eps()), b, cfg.Dim)
	return hidden, newK, newV
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

// cachedBlocks runs the blocks over x [B,T,D] at positions pos [B,T]
// (int32) with the additive mask bias [B,T,S], after the cached keys and
// values (nil for none), with transposed projections; it returns x and the
// caches grown by T.
func cachedBlocks(p Params, cfg Config, x, pos, bias *graph.Node, kCache, vCache []*graph.Node) (*graph.Node, []*graph.Node, []*graph.Node) {
	g := x.Graph()
	cosT, sinT, rot := ropeTables(g, cfg, cfg.MaxLen)
	idx := graph.InsertAxes(pos, -1)
	cos := graph.InsertAxes(graph.Gather(cosT, idx), 1) // [B,1,T,Dh]
	sin := graph.InsertAxes(graph.Gather(sinT, idx), 1)
	rope := func(q *graph.Node) *graph.Node {
		d := q.Shape().Dimensions
		c, s := graph.BroadcastToDims(cos, d...), graph.BroadcastToDims(sin, d...)
		return graph.Add(graph.Mul(q, c), graph.Mul(backend.Linear(q, rot), s))
	}
	eps := cfg.eps()
	kvh := cfg.KVHeadCount()
	var newK, newV []*graph.Node
	for l := 0; l < cfg.Layers; l++ {
		h := rmsNorm(x, p.get(layerName(l, "attn_norm")), eps)
		q := rope(splitHeads(project(p, cfg, l, "wq", h, LinearT), cfg.Heads))
		k := rope(splitHeads(project(p, cfg, l, "wk", h, LinearT), kvh))
		vt := graph.TransposeAllAxes(splitHeads(project(p, cfg, l, "wv", h, LinearT), kvh), 0, 1, 3, 2) // [B,KV,Dh,T]
		if kCache != nil {
			k = graph.Concatenate([]*graph.Node{kCache[l], k}, 2)
			vt = graph.Concatenate([]*graph.Node{vCache[l], vt}, 3)
		}
		newK = append(newK, k)
		newV = append(newV, vt)
		a := mergeHeads(attend(q, k, vt, 3, bias))
		x = graph.Add(x, LinearT(a, p.get(layerName(l, "wo"))))
		x = graph.Add(x, mlp(p, cfg, l, rmsNorm(x, p.get(layerName(l, "mlp_norm")), eps), LinearT))
	}
	return x, newK, newV
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
