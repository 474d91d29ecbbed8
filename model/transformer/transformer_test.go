package transformer

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
