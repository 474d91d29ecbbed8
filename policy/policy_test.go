package policy

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/backend"
	"github.com/alignflow/alignflow/optim"
	"github.com/alignflow/alignflow/tokenizer"
	"github.com/alignflow/alignflow/transformer"
)

var tinyCfg = transformer.Config{Vocab: tokenizer.VocabSize, Dim: 32, Heads: 4, Layers: 2, Hidden: 64, MaxLen: 24}

// TestKVCacheMatchesFullForward samples with the KV-cached decoder and checks
// that the full teacher-forced pass assigns every sampled token the same
// log-probability the decoder saw.
func TestKVCacheMatchesFullForward(t *testing.T) {
	b, err := backend.New(backend.Go)
	require.NoError(t, err)
	params := Init(tinyCfg, 7)
	e := NewEngine(b, tinyCfg, params)
	prompts := [][]int32{tokenizer.EncodePrompt("hot?"), tokenizer.EncodePrompt("a"), tokenizer.EncodePrompt("longer one")}
	samples, err := e.Generate(params, prompts, 4, SampleOptions{Temperature: 1, TopP: 1, MaxTokens: 10}, rand.New(rand.NewPCG(1, 1)))
	require.NoError(t, err)
	require.Len(t, samples, 3)
	var responses [][]int32
	for _, s := range samples {
		require.Len(t, s.LogProbs, len(s.Tokens))
		responses = append(responses, s.Tokens)
	}
	batch, err := MakeBatch(tinyCfg, 4, prompts, responses)
	require.NoError(t, err)
	lp, err := e.LogProbs(params, batch)
	require.NoError(t, err)
	for row, s := range samples {
		start := len(prompts[row]) - 1
		for j, want := range s.LogProbs {
			assert.InDelta(t, want, lp[row][start+j], 1e-3, "row %d token %d", row, j)
			assert.Equal(t, float32(1), batch.Mask[row][start+j])
		}
	}
}

func TestSFTLearnsAndGreedyReproduces(t *testing.T) {
	b, err := backend.New(backend.Go)
	require.NoError(t, err)
	params := Init(tinyCfg, 3)
	e := NewEngine(b, tinyCfg, params)
	prompts := [][]int32{tokenizer.EncodePrompt("hot"), tokenizer.EncodePrompt("up"), tokenizer.EncodePrompt("big"), tokenizer.EncodePrompt("day")}
	responses := [][]int32{tokenizer.EncodeResponse("cold"), tokenizer.EncodeResponse("down"), tokenizer.EncodeResponse("small"), tokenizer.EncodeResponse("night")}
	batch, err := MakeBatch(tinyCfg, 4, prompts, responses)
	require.NoError(t, err)
	tr := optim.NewTrainer(b, params.Names(), optim.DefaultAdamW, SFTLoss(tinyCfg))
	st := optim.NewState(params)
	in, tg, mk := batch.Tensors()
	first, err := tr.Step(params, st, 1e-2, in, tg, mk)
	require.NoError(t, err)
	var last optim.StepResult
	for i := 0; i < 80; i++ {
		last, err = tr.Step(params, st, 1e-2, in, tg, mk)
		require.NoError(t, err)
	}
	assert.Less(t, last.Loss, first.Loss/10, "SFT loss must fall: first %.3f last %.3f", first.Loss, last.Loss)
	samples, err := e.Generate(params, prompts, 4, SampleOptions{Temperature: 0, MaxTokens: 12}, rand.New(rand.NewPCG(1, 1)))
	require.NoError(t, err)
	for i, s := range samples {
		assert.True(t, s.Ended)
		assert.Equal(t, tokenizer.Decode(responses[i]), tokenizer.Decode(s.Tokens))
	}
}

func TestSampleToken(t *testing.T) {
	logits := []float32{0, 3, 1, 2.9}
	probs := make([]float64, 4)
	r := rand.New(rand.NewPCG(5, 5))
	assert.Equal(t, int32(1), sampleToken(logits, probs, SampleOptions{Temperature: 0}, r))
	// A tiny nucleus keeps only the most likely token.
	for i := 0; i < 50; i++ {
		assert.Equal(t, int32(1), sampleToken(logits, probs, SampleOptions{Temperature: 1, TopP: 0.01}, r))
	}
	// With top-p 1 every token is reachable, in proportion to its probability.
	counts := make([]int, 4)
	for i := 0; i < 20000; i++ {
		counts[sampleToken(logits, probs, SampleOptions{Temperature: 1, TopP: 1}, r)]++
	}
	z := math.Exp(0) + math.Exp(3) + math.Exp(1) + math.Exp(2.9)
	for i, l := range logits {
		assert.InDelta(t, math.Exp(float64(l))/z, float64(counts[i])/20000, 0.02, "token %d", i)
	}
}
