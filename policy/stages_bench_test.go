package policy_test

import (
	"testing"

	"github.com/alignflow/alignflow/bench/benchkit"
)

// The benchmarks below run at the default run spec's sizes (config.Default)
// on the matched data, as bench/harness does for the side-by-side comparison
// with PyTorch (bench/compare.sh). For example:
//
//	go test ./policy -run '^$' -bench 'PolicyTrainStep|GenerationKV' -benchtime 5x

// BenchmarkPolicyTrainStep is one SFT optimizer step (forward, backward,
// clipping, AdamW) on sft.batch_size sequences; tokens/s counts every
// position of the padded batch.
func BenchmarkPolicyTrainStep(b *testing.B) { benchkit.Bench(b, benchkit.PolicyTrainStep) }

// BenchmarkGenerationKV is one Engine.Generate call with the KV cache and
// the REINFORCE sampling settings (max_tokens, temperature, top_p) on a
// batch of 1 and of 16 prompts; tokens/s counts sampled tokens.
func BenchmarkGenerationKV(b *testing.B) {
	b.Run("batch1", func(b *testing.B) { benchkit.Bench(b, benchkit.GenerationBatch1) })
	b.Run("batch16", func(b *testing.B) { benchkit.Bench(b, benchkit.GenerationBatch16) })
}
