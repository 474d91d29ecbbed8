package config

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestTimeoutsAreSecondsWithinAYear: each kind's timeout parses, 0 (the
// default) means sized by the model, and a negative or huge one names its
// field and the allowed range.
func TestTimeoutsAreSecondsWithinAYear(t *testing.T) {
	spec, err := Parse([]byte(`{"timeouts": {"training": 86400, "rollout": 600}}`))
	require.NoError(t, err)
	require.NoError(t, spec.Validate())
	assert.Equal(t, Timeouts{Training: 86400, Rollout: 600}, spec.Timeouts)
	assert.Equal(t, Timeouts{}, Default().Timeouts, "sized by default")
	for field, input := range map[string]string{
		"timeouts.evaluation":  `{"timeouts": {"evaluation": -1}}`,
		"timeouts.bookkeeping": `{"timeouts": {"bookkeeping": 40000000}}`,
	} {
		spec, err := Parse([]byte(input))
		require.NoError(t, err)
		err = spec.Validate()
		require.Error(t, err, field)
		assert.Contains(t, err.Error(), "spec field "+field+": must be in 0..31536000 seconds")
	}
	_, err = Parse([]byte(`{"timeouts": {"training_hours": 3}}`))
	require.ErrorContains(t, err, "timeouts.training_hours: unknown field (allowed: training, evaluation, iteration, rollout, bookkeeping)")
}
