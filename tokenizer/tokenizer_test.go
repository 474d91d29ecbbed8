package tokenizer

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestRoundTripAndSpecials(t *testing.T) {
	for _, s := range []string{"", "cold", "héllo, wörld\n", "\x00\xff"} {
		assert.Equal(t, s, Decode(Encode(s)), "round trip %q", s)
	}
	assert.Equal(t, []int32{BOS, 'h', 'i', '\n'}, EncodePrompt("hi"))
	assert.Equal(t, []int32{'o', 'k', EOS}, EncodeResponse("ok"))
	assert.Equal(t, "ok", Decode([]int32{BOS, 'o', PAD, 'k', EOS}))
}
