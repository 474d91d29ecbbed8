package reward

import (
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

// TestRegressionLossByHand checks the masked mean squared error and its
// gradient 2*(pred-target)*mask/n against values computed by hand.
func TestRegressionLossByHand(t *testing.T) {
	b, err := backend.New(backend.Go)
	require.NoError(t, err)
	pred := [][]float32{{1, 2, 3, 4, 0}, {2, 2, 2, 2, 2}}
	target := [][]float32{{0, 2, 3, 4, 4}, {4, 0, 0, 0, 0}}
	cases := []struct {
		name     string
		mask     [][]float32
		want     float64
		wantGrad [][]float32
	}{
		{"all rated", [][]float32{{1, 1, 1, 1, 1}, {1, 1, 1, 1, 1}},
			(1 + 16 + 4 + 4 + 4 + 4 + 4) / 10.0,
			[][]float32{{0.2, 0, 0, 0, -0.8}, {-0.4, 0.4, 0.4, 0.4, 0.4}}},
		{"helpfulness only", [][]float32{{1, 0, 0, 0, 0}, {1, 0, 0, 0, 0}},
			(1 + 4) / 2.0,
			[][]float32{{1, 0, 0, 0, 0}, {-2, 0, 0, 0, 0}}},
		{"missing rating and a padding row", [][]float32{{1, 1, 1, 1, 0}, {0, 0, 0, 0, 0}},
			1 / 4.0,
			[][]float32{{0.5, 0, 0, 0, 0}, {0, 0, 0, 0, 0}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := graph.MustExecOnceN(b, func(p, tg, m *graph.Node) []*graph.Node {
				loss := RegressionLoss(p, tg, m)
				return []*graph.Node{loss, graph.Gradient(loss, p)[0]}
			}, pred, target, tc.mask)
			assert.InDelta(t, tc.want, optim.Scalar(out[0]), 1e-6)
			got := tensors.MustCopyFlatData[float32](out[1])
			var want []float32
			for _, row := range tc.wantGrad {
				want = append(want, row...)
			}
			assert.InDeltaSlice(t, want, got, 1e-6)
		})
	}
}

func TestRegressionTrainingFitsRatings(t *testing.T) {
	b, err := backend.New(backend.Go)
	require.NoError(t, err)
	cfg := transformer.Config{Vocab: tokenizer.VocabSize, Dim: 32, Heads: 4, Layers: 1, Hidden: 64, MaxLen: 32}
	rm, err := InitFromBackbone(policy.Init(cfg, 1), 2)
	require.NoError(t, err)
	row := func(p, r string, help float32) Rated {
		seq, _, _ := tokenizer.Fit(tokenizer.EncodePrompt(p), tokenizer.EncodeResponse(r), cfg.MaxLen, 1)
		x := Rated{Sequence: seq}
		x.Ratings[Helpfulness], x.Present[Helpfulness] = help, true
		x.Ratings[2], x.Present[2] = 4, true // coherence rated, the rest missing
		return x
	}
	rows := []Rated{row("opposite of hot?", "cold", 4), row("opposite of hot?", "well, small", 0),
		row("antonym of up:", "down", 4), row("antonym of up:", "zzq", 1)}
	batch, err := MakeRatingBatch(rows, 4, cfg, false)
	require.NoError(t, err)
	assert.Equal(t, []float32{4, 0, 4, 0, 0}, batch.Target[0])
	assert.Equal(t, []float32{1, 0, 1, 0, 0}, batch.Mask[0])
	tr := optim.NewTrainer(b, rm.Names(), optim.DefaultAdamW, RegressionTrainingLoss(cfg))
	sess, err := tr.Start(rm, optim.NewState(rm))
	require.NoError(t, err)
	first, err := sess.Step(3e-3, batch)
	require.NoError(t, err)
	var last optim.StepResult
	for i := 0; i < 60; i++ {
		last, err = sess.Step(3e-3, batch)
		require.NoError(t, err)
	}
	require.NoError(t, sess.Close())
	assert.Less(t, last.Loss, first.Loss/10, "regression fits the ratings: %.3f -> %.3f", first.Loss, last.Loss)
	e := NewEngine(b, cfg, rm)
	seqs := make([][]int32, len(rows))
	for i, r := range rows {
		seqs[i] = r.Sequence
	}
	r, err := e.Rewards(rm, seqs, 4)
	require.NoError(t, err)
	assert.Greater(t, r[0], r[1])
	assert.Greater(t, r[2], r[3])
}

func TestInitHeadBiasIsTheMeanRating(t *testing.T) {
	rm, err := InitFromBackbone(policy.Init(transformer.Config{Vocab: tokenizer.VocabSize, Dim: 8, Heads: 2, Layers: 1, Hidden: 16, MaxLen: 16}, 1), 1)
	require.NoError(t, err)
	rows := []Rated{
		{Ratings: [NumAttributes]float32{4, 1, 0, 2, 3}, Present: [NumAttributes]bool{true, true, true, true, false}},
		{Ratings: [NumAttributes]float32{1, 3, 0, 2, 3}, Present: [NumAttributes]bool{true, true, true, true, false}},
	}
	require.NoError(t, InitHeadBias(rm, rows))
	assert.Equal(t, []float32{2.5, 2, 0, 2, 0}, rm.Get(HeadB).Data, "means of the rated values; unrated verbosity keeps 0")
}
