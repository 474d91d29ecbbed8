package policy

import (
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/model/backend"
	"github.com/alignflow/alignflow/model/optim"
	"github.com/alignflow/alignflow/model/tokenizer"
	"github.com/alignflow/alignflow/model/transformer"
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

// TestGenerateStopsAtMaxLen samples from an untrained policy (EOS is rare)
// with prompts that leave a few positions free and a token budget larger
// than that: every response stops exactly when prompt and response fill
// MaxLen, never past it, so nothing sampled is cut when it is scored.
func TestGenerateStopsAtMaxLen(t *testing.T) {
	b, err := backend.New(backend.Go)
	require.NoError(t, err)
	params := Init(tinyCfg, 11)
	e := NewEngine(b, tinyCfg, params)
	max := tinyCfg.MaxLen
	prompts := [][]int32{
		tokenizer.EncodePrompt("this prompt is long"),   // 21 tokens of 24: room for 3
		tokenizer.EncodePrompt("this prompt is longer"), // 23 of 24: room for 1
		tokenizer.EncodePrompt("short"),
	}
	require.Equal(t, max-3, len(prompts[0]))
	require.Equal(t, max-1, len(prompts[1]))
	samples, err := e.Generate(params, prompts, 4, SampleOptions{Temperature: 1, TopP: 1, MaxTokens: 30}, rand.New(rand.NewPCG(2, 2)))
	require.NoError(t, err)
	for i, s := range samples {
		seq := s.Sequence(prompts[i])
		assert.LessOrEqual(t, len(seq), max, "sample %d", i)
		if !s.Ended {
			assert.Len(t, seq, max, "sample %d stops when the sequence fills max_len, not before", i)
		}
		assert.Equal(t, prompts[i], seq[:len(prompts[i])])
		assert.Equal(t, s.Tokens, seq[len(prompts[i]):])
	}
	assert.Len(t, samples[1].Tokens, 1, "a prompt one short of max_len gets one token")
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
	sess, err := tr.Start(params, optim.NewState(params))
	require.NoError(t, err)
	first, err := sess.Step(1e-2, batch)
	require.NoError(t, err)
	var last optim.StepResult
	for i := 0; i < 80; i++ {
		last, err = sess.Step(1e-2, batch)
		require.NoError(t, err)
	}
	require.NoError(t, sess.Close())
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

// TestSampleTokenKeepsItsOrder: sampling draws the same tokens as the
// stable sort it replaced (most likely first, ties by id), so runs stay
// reproducible across versions.
func TestSampleTokenKeepsItsOrder(t *testing.T) {
	stable := func(logits []float32, probs []float64, opts SampleOptions, rng *rand.Rand) int32 {
		maxL, sum := float64(slices.Max(logits)), 0.0
		for i, l := range logits {
			probs[i] = math.Exp((float64(l) - maxL) / opts.Temperature)
			sum += probs[i]
		}
		order := make([]int, len(logits))
		for i := range order {
			order[i] = i
		}
		sort.SliceStable(order, func(a, b int) bool { return probs[order[a]] > probs[order[b]] })
		kept, mass := 0, 0.0
		for _, id := range order {
			kept++
			mass += probs[id] / sum
			if mass >= opts.TopP {
				break
			}
		}
		u := rng.Float64() * mass * sum
		acc := 0.0
		for _, id := range order[:kept] {
			acc += probs[id]
			if u < acc {
				return int32(id)
			}
		}
		return int32(order[kept-1])
	}
	gen := rand.New(rand.NewPCG(7, 7))
	for trial := 0; trial < 300; trial++ {
		logits := make([]float32, 259)
		for i := range logits {
			logits[i] = float32(gen.IntN(6)) // many ties
		}
		opts := SampleOptions{Temperature: 1, TopP: []float64{1, 0.9, 0.5}[trial%3]}
		probs := make([]float64, len(logits))
		seed := uint64(trial)
		got := sampleToken(logits, probs, opts, rand.New(rand.NewPCG(seed, 1)))
		want := stable(logits, probs, opts, rand.New(rand.NewPCG(seed, 1)))
		require.Equal(t, want, got, "trial %d", trial)
	}
}

func BenchmarkSampleToken(b *testing.B) {
	gen := rand.New(rand.NewPCG(1, 2))
	logits := make([]float32, 259)
	for i := range logits {
		logits[i] = float32(gen.NormFloat64() * 3)
	}
	probs := make([]float64, len(logits))
	opts := SampleOptions{Temperature: 1, TopP: 1}
	for b.Loop() {
		sampleToken(logits, probs, opts, gen)
	}
}
