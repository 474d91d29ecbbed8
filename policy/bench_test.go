package policy

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/alignflow/alignflow/model/backend"
	"github.com/alignflow/alignflow/model/optim"
	"github.com/alignflow/alignflow/model/tokenizer"
	"github.com/alignflow/alignflow/model/transformer"
)

var benchCfg = transformer.Config{Vocab: tokenizer.VocabSize, Dim: 64, Heads: 4, Layers: 2, Hidden: 192, MaxLen: 56}

func benchBatch(b *testing.B, rows int) *Batch {
	var prompts, responses [][]int32
	for i := 0; i < rows; i++ {
		prompts = append(prompts, tokenizer.EncodePrompt("opposite of happy?"))
		responses = append(responses, tokenizer.EncodeResponse("well, i think sad, maybe"))
	}
	batch, err := MakeBatch(benchCfg, rows, prompts, responses)
	if err != nil {
		b.Fatal(err)
	}
	return batch
}

// BenchmarkSFTStep measures one optimizer step (forward, backward, AdamW) on
// batches of 16 and 64 sequences of 48 tokens; tokens/s counts every position.
func BenchmarkSFTStep(b *testing.B) {
	for _, rows := range []int{16, 64} {
		b.Run(fmt.Sprintf("batch%d", rows), func(b *testing.B) { benchSFT(b, rows) })
	}
}

func benchSFT(b *testing.B, rows int) {
	be, err := backend.New(backend.Go)
	if err != nil {
		b.Fatal(err)
	}
	params := Init(benchCfg, 1)
	tr := optim.NewTrainer(be, params.Names(), optim.DefaultAdamW, SFTLoss(benchCfg))
	batch := benchBatch(b, rows)
	sess, err := tr.Start(params, optim.NewState(params))
	if err != nil {
		b.Fatal(err)
	}
	defer sess.Close()
	if _, err := sess.Step(1e-3, batch); err != nil { // compile
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := sess.Step(1e-3, batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(rows*len(batch.Inputs[0])*b.N)/b.Elapsed().Seconds(), "tokens/s")
}

// BenchmarkGenerate measures sampling 64 responses with the KV cache.
func BenchmarkGenerate(b *testing.B) {
	be, err := backend.New(backend.Go)
	if err != nil {
		b.Fatal(err)
	}
	params := Init(benchCfg, 1)
	e := NewEngine(be, benchCfg, params)
	prompts := make([][]int32, 64)
	for i := range prompts {
		prompts[i] = tokenizer.EncodePrompt("opposite of happy?")
	}
	opts := SampleOptions{Temperature: 1, TopP: 1, MaxTokens: 32}
	rng := rand.New(rand.NewPCG(1, 1))
	if _, err := e.Generate(params, prompts, 64, opts, rng); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	tokens := 0
	for i := 0; i < b.N; i++ {
		s, err := e.Generate(params, prompts, 64, opts, rng)
		if err != nil {
			b.Fatal(err)
		}
		for _, x := range s {
			tokens += len(x.Tokens)
		}
	}
	b.ReportMetric(float64(tokens)/b.Elapsed().Seconds(), "tokens/s")
}
