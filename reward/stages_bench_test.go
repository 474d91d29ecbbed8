package reward_test

import (
	"testing"

	"github.com/alignflow/alignflow/bench/benchkit"
)

// BenchmarkRewardTrainStep is one Bradley-Terry optimizer step of the reward
// model (the default recipe's BT variant) on reward.batch_size preference
// pairs at the default run spec's sizes; pairs/s counts pairs. See
// bench/README.md for the side-by-side comparison with PyTorch.
func BenchmarkRewardTrainStep(b *testing.B) { benchkit.Bench(b, benchkit.RewardTrainStep) }
