package reinforce_test

import (
	"testing"

	"github.com/alignflow/alignflow/bench/benchkit"
)

// BenchmarkIteration is one Iteration.Run at the default run spec's sizes:
// samples_per_prompt responses to each of prompts_per_iteration prompts,
// reward scoring, log-probabilities under the policy and the reference, KL
// penalty, leave-one-out baseline and one policy update; prompts/s counts
// prompts. The policy is a fresh one after a short SFT run, so responses end
// with EOS and advantages are not all zero. See bench/README.md.
func BenchmarkIteration(b *testing.B) { benchkit.Bench(b, benchkit.ReinforceIteration) }
