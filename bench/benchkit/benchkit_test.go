package benchkit

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/model/backend"
	"github.com/alignflow/alignflow/model/weights"
	"github.com/alignflow/alignflow/policy"
)

func TestMedian(t *testing.T) {
	assert.Equal(t, 0.0, Median(nil))
	assert.Equal(t, 2.0, Median([]float64{3, 1, 2}))
	assert.Equal(t, 2.5, Median([]float64{4, 1, 3, 2}))
}

func TestDecodeSteps(t *testing.T) {
	samples := []policy.Sample{{Tokens: []int32{7, 8}}, {Tokens: []int32{7, 8, 9}}}
	// The prefill samples every row's first token, then two decode steps
	// give row 1 its other two.
	assert.Equal(t, 3, DecodeSteps(samples))
}

// The fixtures are deterministic and written in the layout the PyTorch
// reference reads.
func TestFixturesWrite(t *testing.T) {
	be, err := backend.New(backend.Go)
	require.NoError(t, err)
	s := DefaultSizes()
	s.Reinforce.PolicySFTSteps = 0
	c := Counts{TrainWarmup: 1, TrainSteps: 1, GenWarmup: 1, GenSteps: 1, RLWarmup: 1, RLSteps: 1}
	d := LoadData(s)
	f, err := NewFixtures(be, s, c, d)
	require.NoError(t, err)
	g, err := NewFixtures(be, s, c, d)
	require.NoError(t, err)
	assert.Equal(t, f.Policy.Digest(), g.Policy.Digest())
	assert.Equal(t, f.SFTBatches[1].Inputs, g.SFTBatches[1].Inputs)
	assert.Equal(t, f.RLPrompts, g.RLPrompts)
	require.Len(t, f.SFTBatches, 2)
	require.Len(t, f.PairBatches, 2)
	require.Len(t, f.RLPrompts, RLCheckIterations+2)
	assert.Len(t, f.GenPrompts[16], 16)

	dir := t.TempDir()
	require.NoError(t, f.Write(dir, []string{PolicyTrainStep}))
	var spec map[string]any
	b, err := os.ReadFile(filepath.Join(dir, SpecFile))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &spec))
	assert.Equal(t, float64(s.Model.Dim), spec["model"].(map[string]any)["dim"])
	assert.Equal(t, []any{PolicyTrainStep}, spec["stages"])
	r, err := os.Open(filepath.Join(dir, RewardInitFile))
	require.NoError(t, err)
	defer r.Close()
	rm, err := weights.Read(r)
	require.NoError(t, err)
	assert.Equal(t, f.Reward.Digest(), rm.Digest())
}

// The scale benchmark's stages run on a small model of the same kind
// (grouped-query attention, gated MLP, tied embeddings): each does the
// work it reports, and the greedy check decodes what the stage decodes.
func TestScaleStagesOnASmallModel(t *testing.T) {
	be, err := backend.New(backend.Go)
	require.NoError(t, err)
	s := SmolLM2Sizes()
	s.Model.Vocab, s.Model.Dim, s.Model.Heads, s.Model.KVHeads, s.Model.Layers, s.Model.Hidden = 300, 24, 6, 2, 2, 32
	s.GenBatches = []int{1, 3}
	s.PromptLen, s.DecodeSteps, s.TrainPrompt, s.TrainResponse = 5, 4, 4, 9
	c := Counts{TrainWarmup: 1, TrainSteps: 2, GenWarmup: 0, GenSteps: 1}
	f, err := NewScaleFixtures(s, c)
	require.NoError(t, err)
	require.Len(t, f.TrainBatches, 3)
	assert.Len(t, f.Prompts[3], 3)
	assert.Nil(t, f.Policy.Get(policy.LMHead), "tied embeddings: no separate head")

	dir := t.TempDir()
	stages := ScaleStages(be, f)
	var first float64
	var names []string
	for _, st := range stages {
		names = append(names, st.Name)
	}
	assert.Equal(t, []string{PolicyTrainStep, PolicyTrainStepLoRA, "prefill_batch1", "prefill_batch3", "decode_batch1", "decode_batch3"}, names)
	require.NoError(t, f.Write(dir, names))
	for _, st := range stages {
		w, n := c.For(st.Name)
		r, err := Run(st, w, n)
		require.NoError(t, err, st.Name)
		switch st.Name {
		case PolicyTrainStep, PolicyTrainStepLoRA:
			assert.Equal(t, float64(4*16), r.WorkMedian, "4 rows padded to width 16")
			require.Len(t, r.Losses, 3)
			assert.Less(t, r.Losses[2], r.Losses[0], "training lowers the loss")
			if first == 0 {
				first = r.Losses[0]
			} else {
				assert.Equal(t, first, r.Losses[0], "a fresh adapter's first loss is the model's")
			}
		case "prefill_batch3":
			assert.Equal(t, float64(3*5), r.WorkMedian)
			c := st.Check.(*PrefillCheck)
			assert.Len(t, c.Logits, 300)
			require.Len(t, c.Greedy, 3)
			assert.Len(t, c.Greedy[0], 5, "the prefill's token and one per decoding step")
		case "decode_batch3":
			assert.Equal(t, float64(3*4), r.WorkMedian)
		}
		require.NoError(t, WriteCheck(dir, st))
	}
	_, err = os.Stat(filepath.Join(dir, ChecksDir, "prefill_batch1.json"))
	require.NoError(t, err)
}
