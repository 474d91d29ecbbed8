package hftokenizer

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRegexSearchesAreBounded: a tokenizer.json regex that backtracks
// exponentially ((a+)+$ takes 11.5 s at 26 characters and years at 64)
// ends the encoding with an error naming the file, the field and the
// pattern once a search passes RegexTimeout, in a pre-tokenizer, in a
// normaliser, and in a normaliser applied to an added token at parse time;
// the same tokenizer encodes texts it can search.
func TestRegexSearchesAreBounded(t *testing.T) {
	defer func(d time.Duration) { RegexTimeout = d }(RegexTimeout)
	RegexTimeout = 50 * time.Millisecond // the input below would take years
	evil := strings.Repeat("a", 64) + "b"
	cases := []struct {
		name, field string
		parts       map[string]string
	}{
		{"pre-tokenizer", "pre_tokenizer.pretokenizers[0].pattern.Regex", map[string]string{
			"pre_tokenizer": `{"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "(a+)+$"}, "behavior": "Isolated"}]}`}},
		{"normaliser", "normalizer.pattern.Regex", map[string]string{
			"normalizer": `{"type": "Replace", "pattern": {"Regex": "(a+)+$"}, "content": "c"}`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tok := build(t, []string{"a", "b", "c"}, [][]string{}, tc.parts)
			tok.Path = "/models/m/tokenizer.json"
			ids, err := tok.EncodeChecked("ab", false)
			require.NoError(t, err)
			assert.NotEmpty(t, ids)

			_, err = tok.EncodeChecked(evil, false)
			var re *RegexError
			require.True(t, errors.As(err, &re), "%v", err)
			assert.Equal(t, tc.field, re.Field)
			assert.Equal(t, "(a+)+$", re.Pattern)
			assert.Equal(t, len(evil), re.Chars)
			assert.Contains(t, err.Error(), `tokenizer /models/m/tokenizer.json: `+tc.field+`: the regex "(a+)+$" ran past 50ms on a text of 65 characters`)
			assert.PanicsWithError(t, err.Error(), func() { tok.Encode(evil, false) }, "Encode panics with the same error")
		})
	}
	t.Run("an added token at parse time", func(t *testing.T) {
		_, err := Parse(buildJSON(t, []string{"a", "b"}, [][]string{}, map[string]string{
			"normalizer":   `{"type": "Replace", "pattern": {"Regex": "(a+)+$"}, "content": "c"}`,
			"added_tokens": `[{"id": 2, "content": "` + evil + `", "special": false, "normalized": true}]`}))
		var re *RegexError
		require.True(t, errors.As(err, &re), "%v", err)
		assert.Contains(t, err.Error(), "added tokens: normalizer.pattern.Regex")
	})
}
