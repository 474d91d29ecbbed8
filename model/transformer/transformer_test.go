package transformer

import (
	"math/rand/v2"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/model/backend"
)

// TestRopeFrequencies: Llama 3.1's rope_scaling leaves high frequencies,
// divides low ones by the factor and blends between; linear divides all.
// The expected values are transformers' _compute_llama3_parameters,
// worked out separately for theta 500000, head width 64, factor 8, low and
// high frequency factors 1 and 4, 8192 original positions.
func TestRopeFrequencies(t *testing.T) {
	cfg := Config{Vocab: 8, Dim: 128, Heads: 2, Layers: 1, Hidden: 8, MaxLen: 8, RopeTheta: 500000,
		RopeScaling: &RopeScaling{Type: RopeLlama3, Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPositions: 8192}}
	require.NoError(t, cfg.Validate())
	f := cfg.frequencies()
	require.Len(t, f, 32)
	for i, want := range map[int]float64{0: 1, 10: 0.016560440080994446, 16: 0.0005248461609929547, 20: 3.428102195952591e-05, 24: 6.647869871181235e-06, 31: 3.767322690173964e-07} {
		assert.InEpsilon(t, want, f[i], 1e-12, "frequency %d", i)
	}
	cfg.RopeScaling = &RopeScaling{Type: RopeLinear, Factor: 4}
	assert.InEpsilon(t, 0.25, cfg.frequencies()[0], 1e-12)
	plain := Config{Vocab: 8, Dim: 16, Heads: 2, Layers: 1, Hidden: 8, MaxLen: 8}
	assert.InDeltaSlice(t, []float64{1, 0.1, 0.01, 0.001}, plain.frequencies(), 1e-15, "the bundled model: base 10000, head width 8")
}

func TestValidateNamesTheField(t *testing.T) {
	base := Config{Vocab: 8, Dim: 16, Heads: 4, Layers: 1, Hidden: 8, MaxLen: 8}
	for _, tc := range []struct {
		change func(*Config)
		want   string
	}{
		{func(c *Config) { c.KVHeads = 3 }, "multiple of kv_heads"},
		{func(c *Config) { c.HeadSize = 3 }, "must be even"},
		{func(c *Config) { c.RopeScaling = &RopeScaling{Type: "yarn", Factor: 2} }, `rope_scaling type "yarn" is not supported (supported: llama3, linear)`},
		{func(c *Config) { c.RopeScaling = &RopeScaling{Type: RopeLlama3, Factor: 8} }, "low_freq_factor"},
		{func(c *Config) { c.Dim = 18 }, "multiple of heads"},
	} {
		c := base
		tc.change(&c)
		err := c.Validate()
		require.Error(t, err)
		assert.Contains(t, err.Error(), tc.want)
	}
	gqa := base
	gqa.KVHeads, gqa.HeadSize = 2, 6 // 4 heads of 6 over a width of 16: allowed with head_dim
	assert.NoError(t, gqa.Validate())
}

// TestCachedForwardMatchesFullForward: the prefill of a left-padded batch
// and the decode steps after it give every row, at every position, the
// hidden state the full forward gives the row's sequence alone, for the
// bundled architecture and for each Llama-family variant. The block is one
// function, so this checks its two layouts (transposed projections and V
// cache) and its two masks and position paths (left padding, the cache's
// offset) against each other.
func TestCachedForwardMatchesFullForward(t *testing.T) {
	be, err := backend.New(backend.Go)
	require.NoError(t, err)
	base := Config{Vocab: 11, Dim: 16, Heads: 4, Layers: 2, Hidden: 24, MaxLen: 12}
	for name, change := range map[string]func(*Config){
		"bundled":         func(*Config) {},
		"gqa, biases":     func(c *Config) { c.KVHeads, c.QKVBias = 2, true },
		"gqa, all biases": func(c *Config) { c.KVHeads, c.QKVBias, c.OBias = 2, true, true },
		"gated, head_dim": func(c *Config) { c.GatedMLP, c.HeadSize, c.KVHeads = true, 6, 1 },
		"llama3 rope": func(c *Config) {
			c.RopeTheta, c.RopeScaling = 500000, &RopeScaling{Type: RopeLlama3, Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPositions: 4}
		},
		"linear rope, eps": func(c *Config) { c.RopeScaling, c.NormEps = &RopeScaling{Type: RopeLinear, Factor: 2}, 1e-5 },
	} {
		t.Run(name, func(t *testing.T) {
			cfg := base
			change(&cfg)
			require.NoError(t, cfg.Validate())
			params := InitBackbone(cfg, 3)
			r := rand.New(rand.NewPCG(4, 4))
			for _, n := range params.Names() {
				if part := n[len(n)-2:]; part == "bq" || part == "bk" || part == "bv" || part == "bo" {
					for i := range params.Get(n).Data {
						params.Get(n).Data[i] = float32(r.NormFloat64())
					}
				}
			}
			seqs := [][]int32{{1, 5, 2, 7, 3, 9, 4}, {8, 6, 10, 2, 5}}
			promptLen := []int{4, 2}
			const steps = 3

			full := graph.MustNewExec(be, func(in []*graph.Node) *graph.Node {
				return Hidden(ParamsOf(params.Names(), in), cfg, in[len(in)-1])
			}).SetMaxCache(-1)
			want := make([][][]float32, len(seqs)) // [row][position][D]
			for b, seq := range seqs {
				args, err := params.Args(params.Names())
				require.NoError(t, err)
				out := full.MustExec1(append(args, tensors.FromValue([][]int32{seq}))...)
				flat := tensors.MustCopyFlatData[float32](out)
				for j := range seq {
					want[b] = append(want[b], flat[j*cfg.Dim:(j+1)*cfg.Dim])
				}
			}

			names := params.Names()
			np, layers := len(names), cfg.Layers
			prefill := graph.MustNewExec(be, func(in []*graph.Node) []*graph.Node {
				h, ks, vs := Prefill(ParamsOf(names, in[:np]), cfg, in[np], in[np+1])
				return append(append([]*graph.Node{h}, ks...), vs...)
			})
			decode := graph.MustNewExec(be, func(in []*graph.Node) []*graph.Node {
				h, ks, vs := DecodeStep(ParamsOf(names, in[:np]), cfg, in[np], in[np+1], in[np+2:np+2+layers], in[np+2+layers:])
				return append(append([]*graph.Node{h}, ks...), vs...)
			}).SetMaxCache(-1)
			tp, err := TransposeProjections(params, Projections(cfg))
			require.NoError(t, err)
			args, err := tp.Args(names)
			require.NoError(t, err)
			longest := max(promptLen[0], promptLen[1])
			tokens, pads := make([][]int32, len(seqs)), make([]int32, len(seqs))
			for b, seq := range seqs {
				pads[b] = int32(longest - promptLen[b])
				tokens[b] = append(make([]int32, pads[b]), seq[:promptLen[b]]...) // token 0 pads
			}
			outs := prefill.MustExec(append(args, tensors.FromValue(tokens), tensors.FromValue(pads))...)
			check := func(step int, h *tensors.Tensor) {
				flat := tensors.MustCopyFlatData[float32](h)
				for b := range seqs {
					pos := promptLen[b] - 1 + step
					assert.InDeltaSlice(t, want[b][pos], flat[b*cfg.Dim:(b+1)*cfg.Dim], 2e-5, "row %d position %d (step %d)", b, pos, step)
				}
			}
			check(0, outs[0])
			for step := 1; step <= steps; step++ {
				next := make([]int32, len(seqs))
				for b, seq := range seqs {
					next[b] = seq[promptLen[b]-1+step]
				}
				in := append(append([]any(nil), args...), tensors.FromValue(next), tensors.FromValue(pads))
				for _, c := range outs[1:] {
					in = append(in, c)
				}
				outs = decode.MustExec(in...)
				check(step, outs[0])
			}
		})
	}
}

// TestLoRADropoutIsTorchs: the adapters' input dropout is nn.Dropout in
// training mode: each value zeroed with probability p, the others scaled
// by 1/(1-p), and the random state advanced, so the next adapter draws
// another mask; the same state draws the same mask.
func TestLoRADropoutIsTorchs(t *testing.T) {
	be, err := backend.New(backend.Go)
	require.NoError(t, err)
	const n, rate = 20000, 0.3
	exec := graph.MustNewExec(be, func(state, x *graph.Node) (a, b *graph.Node) {
		p := Params{DropoutRNG: state}
		return p.dropout(x, rate), p.dropout(x, rate)
	})
	ones := make([]float32, n)
	for i := range ones {
		ones[i] = 1
	}
	state, err := graph.RNGStateFromSeed(7)
	require.NoError(t, err)
	run := func() (a, b []float32) {
		out := exec.MustExec(state, tensors.FromValue(ones))
		return tensors.MustCopyFlatData[float32](out[0]), tensors.MustCopyFlatData[float32](out[1])
	}
	a, b := run()
	zeros, differ := 0, 0
	for i := range a {
		switch a[i] {
		case 0:
			zeros++
		default:
			require.InDelta(t, 1/(1-rate), a[i], 1e-6, "kept values are scaled by 1/(1-p)")
		}
		if (a[i] == 0) != (b[i] == 0) {
			differ++
		}
	}
	assert.InDelta(t, rate, float64(zeros)/n, 0.015, "the fraction zeroed is p")
	assert.InDelta(t, 2*rate*(1-rate), float64(differ)/n, 0.015, "the second draw is independent of the first")
	again, _ := run()
	assert.Equal(t, a, again, "the same state draws the same mask")
}
