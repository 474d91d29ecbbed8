package tokenizer

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRoundTripAndSpecials(t *testing.T) {
	for _, s := range []string{"", "cold", "héllo, wörld\n", "\x00\xff"} {
		assert.Equal(t, s, Decode(Encode(s)), "round trip %q", s)
	}
	assert.Equal(t, []int32{BOS, 'h', 'i', '\n'}, EncodePrompt("hi"))
	assert.Equal(t, []int32{'o', 'k', EOS}, EncodeResponse("ok"))
	assert.Equal(t, "ok", Decode([]int32{BOS, 'o', PAD, 'k', EOS}))
}

func TestParseTurns(t *testing.T) {
	tests := []struct {
		name   string
		prompt string
		want   []Turn
	}{
		{"single turn", "opposite of hot?", []Turn{{"User", "opposite of hot?"}}},
		{"empty", "", []Turn{{"User", ""}}},
		{"three turns", "hi<extra_id_1>Assistant\nhello<extra_id_1>User\nwhy?",
			[]Turn{{"User", "hi"}, {"Assistant", "hello"}, {"User", "why?"}}},
		{"only the newline after the marker is removed", "a\n<extra_id_1>Assistant\n\n b \n<extra_id_1>User\nc\nd",
			[]Turn{{"User", "a\n"}, {"Assistant", "\n b \n"}, {"User", "c\nd"}}},
		{"marker at the end without newline", "q<extra_id_1>Assistant",
			[]Turn{{"User", "q"}, {"Assistant", ""}}},
		{"empty first turn", "<extra_id_1>User\nq", []Turn{{"User", ""}, {"User", "q"}}},
		{"other extra ids are text", "a<extra_id_0>System\nb", []Turn{{"User", "a<extra_id_0>System\nb"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseTurns(tc.prompt)
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestParseTurnsRejectsUnknownRoles(t *testing.T) {
	tests := []struct{ prompt, want string }{
		{"hi<extra_id_1>System\nbe nice",
			`turn 2 has unknown role marker "<extra_id_1>System" (want "<extra_id_1>User" or "<extra_id_1>Assistant" followed by a newline)`},
		{"hi<extra_id_1>Assistant\nok<extra_id_1>user\nwhy?", `turn 3 has unknown role marker "<extra_id_1>user"`},
		{"hi<extra_id_1>User why?", `turn 2 has unknown role marker "<extra_id_1>User why?"`},
		{"hi<extra_id_1>\nwhy?", `turn 2 has unknown role marker "<extra_id_1>"`},
		{"hi<extra_id_1>" + "abcdefghijklmnopqrstuvwxyz0123456789\nx", `unknown role marker "<extra_id_1>abcdefghijklmnopqrstuvwxyz012345..."`},
	}
	for _, tc := range tests {
		_, err := ParseTurns(tc.prompt)
		require.Error(t, err, tc.prompt)
		assert.Contains(t, err.Error(), tc.want)
		assert.Equal(t, tc.prompt, ChatPrompt(tc.prompt), "an invalid prompt is left unchanged")
	}
}

func TestChatPrompt(t *testing.T) {
	tests := []struct{ name, prompt, want string }{
		{"single turn unchanged", "opposite of hot?", "opposite of hot?"},
		{"single turn with newlines and spaces unchanged", " a\r\n\tb \n", " a\r\n\tb \n"},
		{"empty", "", ""},
		{"issue example", "hi<extra_id_1>Assistant\nhello<extra_id_1>User\nwhy?", "hi\nAssistant: hello\nUser: why?"},
		{"multi-line turns", "list two:<extra_id_1>Assistant\n1. a\n2. b<extra_id_1>User\nmore", "list two:\nAssistant: 1. a\n2. b\nUser: more"},
		{"newline before the marker kept", "a\n<extra_id_1>Assistant\nb", "a\n\nAssistant: b"},
		{"trailing assistant marker", "q<extra_id_1>Assistant\n", "q\nAssistant: "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, ChatPrompt(tc.prompt))
		})
	}
}

func TestEncodePromptUsesChatPrompt(t *testing.T) {
	assert.Equal(t, []int32{BOS, 'h', 'i', '\n'}, EncodePrompt("hi"))
	want := append([]int32{BOS}, Encode("hi\nAssistant: yo\nUser: ok")...)
	want = append(want, '\n')
	assert.Equal(t, want, EncodePrompt("hi<extra_id_1>Assistant\nyo<extra_id_1>User\nok"))
	assert.Equal(t, "hi\nAssistant: yo\nUser: ok\n", Decode(EncodePrompt("hi<extra_id_1>Assistant\nyo<extra_id_1>User\nok")))
}

func TestFitKeepsTheResponseAndTheEndOfThePrompt(t *testing.T) {
	enc := func(s string) []int32 { return Encode(s) }
	bos := func(s string) []int32 { return append([]int32{BOS}, enc(s)...) }
	tests := []struct {
		name             string
		prompt, response []int32
		maxLen           int
		want             []int32
		whole, cut       bool
	}{
		{"both fit", bos("ab"), enc("cd"), 8, bos("abcd"), true, false},
		{"exactly max_len", bos("abc"), enc("defg"), 8, bos("abcdefg"), true, false},
		{"the prompt loses its start", bos("0123456789"), enc("xy"), 8, bos("56789xy"), true, true},
		// The prompt keeps half the window (BOS and 3), the response the rest.
		{"a long response loses its end", bos("0123456789"), enc("abcdefghij"), 8, bos("789abcd"), false, true},
		{"a short prompt stays whole", bos("0"), enc("abcdefghij"), 8, bos("0abcdef"), false, false},
	}
	for _, tc := range tests {
		seq, whole, cut := Fit(tc.prompt, tc.response, tc.maxLen, 1)
		assert.Equal(t, tc.want, seq, tc.name)
		assert.Equal(t, tc.whole, whole, tc.name)
		assert.Equal(t, tc.cut, cut, tc.name)
		assert.LessOrEqual(t, len(seq), tc.maxLen, tc.name)
	}
	// A prompt without a BOS (a chat template that writes none, as Qwen2's
	// and SmolLM2's) keeps nothing of its start: its first id opens a turn,
	// and keeping it alone would splice it into the middle of one.
	seq, whole, cut := Fit(enc("<0123456789"), enc("xy"), 8, 0)
	assert.Equal(t, enc("456789xy"), seq)
	assert.True(t, whole)
	assert.True(t, cut)
	seq, _, _ = Fit(enc("<0123456789"), enc("xy"), 8, 1)
	assert.Equal(t, enc("<56789xy"), seq, "keeping one id where none is a BOS splices it in")
}
