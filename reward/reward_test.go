package reward

import (
	"math"
	"strings"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/model/backend"
	"github.com/alignflow/alignflow/model/optim"
	"github.com/alignflow/alignflow/model/tokenizer"
	"github.com/alignflow/alignflow/model/transformer"
	"github.com/alignflow/alignflow/policy"
)

// TestPairLossByHand checks the Bradley-Terry family against values computed by
// hand and the sign of its gradients.
func TestPairLossByHand(t *testing.T) {
	b, err := backend.New(backend.Go)
	require.NoError(t, err)
	lse := func(x float64) float64 { return math.Log1p(math.Exp(-x)) } // -log sigmoid(x)
	cases := []struct {
		name                  string
		chosen, rejected      []float32
		margin, weight, valid []float32
		want                  float64
	}{
		{"equal rewards give log 2", []float32{0.5}, []float32{0.5}, []float32{0}, []float32{1}, []float32{1}, math.Ln2},
		{"gap of one", []float32{2, 0}, []float32{1, 1}, []float32{0, 0}, []float32{1, 1}, []float32{1, 1}, (lse(1) + lse(-1)) / 2},
		{"margin 2 demands a gap", []float32{3}, []float32{1}, []float32{2}, []float32{1}, []float32{1}, math.Ln2},
		{"scaled by magnitude 3", []float32{1}, []float32{0}, []float32{0}, []float32{3}, []float32{1}, 3 * lse(1)},
		{"padding rows ignored", []float32{1, 100}, []float32{0, -100}, []float32{0, 0}, []float32{1, 1}, []float32{1, 0}, lse(1)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := graph.MustExecOnceN(b, func(c, r, m, w, v *graph.Node) []*graph.Node {
				loss := PairLoss(c, r, m, w, v)
				return append([]*graph.Node{loss}, graph.Gradient(loss, c, r)...)
			}, tc.chosen, tc.rejected, tc.margin, tc.weight, tc.valid)
			assert.InDelta(t, tc.want, optim.Scalar(out[0]), 1e-5)
			gc := tensors.MustCopyFlatData[float32](out[1])
			gr := tensors.MustCopyFlatData[float32](out[2])
			for i := range gc {
				if tc.valid[i] == 0 {
					assert.Zero(t, gc[i])
					continue
				}
				assert.Less(t, gc[i], float32(0), "raising the chosen reward lowers the loss")
				assert.Greater(t, gr[i], float32(0), "raising the rejected reward raises the loss")
			}
		})
	}
}

func TestBTTrainingRanksPairs(t *testing.T) {
	b, err := backend.New(backend.Go)
	require.NoError(t, err)
	cfg := transformer.Config{Vocab: tokenizer.VocabSize, Dim: 32, Heads: 4, Layers: 1, Hidden: 64, MaxLen: 32}
	rm, err := InitFromBackbone(policy.Init(cfg, 1), 2)
	require.NoError(t, err)
	assert.Nil(t, rm.Get(policy.LMHead), "the language-model head is not part of the reward model")
	seq := func(p, r string) []int32 {
		s, _, _ := tokenizer.Fit(tokenizer.EncodePrompt(p), tokenizer.EncodeResponse(r), cfg.MaxLen, 1)
		return s
	}
	pairs := []Pair{
		{seq("opposite of hot?", "cold"), seq("opposite of hot?", "well, cold i guess"), 2},
		{seq("opposite of up?", "down"), seq("opposite of up?", "hmm, it is down ok"), 1},
		{seq("antonym of big:", "small"), seq("antonym of big:", "so, small, maybe"), 3},
		{seq("what is not wet?", "dry"), seq("what is not wet?", "i think dry!!"), 2},
	}
	held := []Pair{{seq("opposite of day?", "night"), seq("opposite of day?", "well, night, maybe"), 2}}
	e := NewEngine(b, cfg, rm)
	batch, err := MakePairBatch(pairs, 4, cfg, LossBTScaled)
	require.NoError(t, err)
	tr := optim.NewTrainer(b, rm.Names(), optim.DefaultAdamW, BTLoss(cfg))
	sess, err := tr.Start(rm, optim.NewState(rm))
	require.NoError(t, err)
	var res optim.StepResult
	for i := 0; i < 40; i++ {
		res, err = sess.Step(3e-3, batch)
		require.NoError(t, err)
	}
	require.NoError(t, sess.Close())
	assert.Less(t, res.Loss, 0.1)
	acc, err := e.PairwiseAccuracy(rm, pairs, 4)
	require.NoError(t, err)
	assert.Equal(t, 1.0, acc)
	acc, err = e.PairwiseAccuracy(rm, held, 4)
	require.NoError(t, err)
	assert.Equal(t, 1.0, acc, "concise beats padded on an unseen prompt too")
}

// TestPairOfFitsOrDropsLongPairs: a pair keeps both responses whole with
// their EOS, losing the start of a long prompt first (so a prompt longer
// than the window still leaves two different sequences), and a pair whose
// response cannot fit whole is dropped rather than trained on cut.
func TestPairOfFitsOrDropsLongPairs(t *testing.T) {
	const maxLen = 32
	long := tokenizer.EncodePrompt(strings.Repeat("a long prompt ", 4)) // 58 tokens
	require.Greater(t, len(long), maxLen)
	tests := []struct {
		name             string
		prompt           []int32
		chosen, rejected string
		cut, ok          bool
	}{
		{"short pair", tokenizer.EncodePrompt("opposite of hot?"), "cold", "warm", false, true},
		{"a prompt longer than max_len", long, "cold", "well, warm", true, true},
		{"a response that cannot fit", tokenizer.EncodePrompt("q"), "cold", strings.Repeat("x", maxLen), false, false},
		{"a long prompt and a long response", long, "cold", strings.Repeat("x", maxLen/2+1), true, false},
	}
	for _, tc := range tests {
		p, cut, ok := PairOf(tc.prompt, tokenizer.EncodeResponse(tc.chosen), tokenizer.EncodeResponse(tc.rejected), 2, maxLen, 1)
		assert.Equal(t, tc.cut, cut, tc.name)
		assert.Equal(t, tc.ok, ok, tc.name)
		if !ok {
			continue
		}
		assert.Equal(t, 2.0, p.Magnitude)
		for _, s := range [][]int32{p.Chosen, p.Rejected} {
			assert.LessOrEqual(t, len(s), maxLen, tc.name)
			assert.Equal(t, int32(tokenizer.BOS), s[0], tc.name)
			assert.Equal(t, int32(tokenizer.EOS), s[len(s)-1], "%s: the response keeps its EOS", tc.name)
		}
		assert.NotEqual(t, p.Chosen, p.Rejected, tc.name)
		assert.True(t, strings.HasSuffix(tokenizer.Decode(p.Chosen), tc.chosen), tc.name)
	}
}

// TestRecipePlan: a requested recipe brings the models it starts from,
// each once and before it; the recipe's phases are named as checkpoints
// and the metrics log name them.
func TestRecipePlan(t *testing.T) {
	names := func(rs []Recipe) []string {
		var out []string
		for _, r := range rs {
			out = append(out, r.Name)
		}
		return out
	}
	assert.Equal(t, []string{"bt"}, names(Plan([]string{"bt"})))
	assert.Equal(t, []string{"regression-helpfulness", "bt-scaled-from-regression", "bt-scaled-from-regression-expo"},
		names(Plan([]string{"bt-scaled-from-regression-expo"})))
	assert.Equal(t, []string{"bt", "regression-helpfulness", "bt-from-regression"},
		names(Plan([]string{"bt-from-regression", "bt", "regression-helpfulness", "nonsense"})), "in Recipes order, once each")
	assert.Len(t, Plan(RecipeNames()), len(Recipes))

	expo, err := LookupRecipe("bt-scaled-from-regression-expo")
	require.NoError(t, err)
	from, strong := expo.StartsFrom()
	assert.Equal(t, "regression-helpfulness", from)
	assert.Equal(t, "bt-scaled-from-regression", strong)
	for _, name := range []string{"bt", "regression", "regression-helpfulness"} {
		r, _ := LookupRecipe(name)
		from, strong := r.StartsFrom()
		assert.Empty(t, from+strong, "%s starts from the SFT backbone", name)
	}
	reg, _ := LookupRecipe("regression")
	assert.Equal(t, "regression", reg.RegressionPhase())
	assert.Equal(t, "regression-helpfulness", expo.RegressionPhase())
}
