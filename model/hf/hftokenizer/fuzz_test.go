package hftokenizer

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse feeds arbitrary bytes to Parse: it must return a tokenizer or
// an error, never panic, and a tokenizer it returns must encode and decode
// without panicking. The seeds (run by every `go test`) are the shapes of
// real files and of the refused ones; the real fixture files join them
// when they are beside the repository.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		`{"model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2},"merges":["a b"]}}`,
		`{"model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2},"merges":[["a","b"]],"ignore_merges":true,"byte_fallback":true},
		  "normalizer":{"type":"Sequence","normalizers":[{"type":"Prepend","prepend":"▁"},{"type":"Replace","pattern":{"String":" "},"content":"▁"}]},
		  "pre_tokenizer":{"type":"ByteLevel","add_prefix_space":true},
		  "post_processor":{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"a"}},{"Sequence":{"id":"A"}}],"special_tokens":{"a":{"ids":[0]}}},
		  "decoder":{"type":"Sequence","decoders":[{"type":"ByteFallback"},{"type":"Fuse"},{"type":"Strip","content":" ","start":1,"stop":0}]},
		  "added_tokens":[{"id":2,"content":"ab","lstrip":true,"rstrip":true,"single_word":true,"special":true}]}`,
		`{"model":{"type":"BPE","vocab":{"a":0},"merges":[]},"pre_tokenizer":{"type":"Split","pattern":{"Regex":"\\s+(?!\\S)"},"behavior":"MergedWithNext","invert":true}}`,
		`{"model":{"type":"WordPiece","vocab":{"a":0}}}`,
		`{"model":{"type":"BPE","vocab":{"a":-5},"merges":["a a"]}}`,
		`{"model":{"type":"BPE","vocab":{"a":0},"merges":[]},"added_tokens":[{"id":1e12,"content":"x"}]}`,
		`{`, `null`, `[]`, `{"model":null}`,
	} {
		f.Add([]byte(seed))
	}
	for _, rel := range []string{"tokenizers/gpt2/tokenizer.json", "tokenizers/llama2/tokenizer.json", "models/stories260K/tokenizer.json"} {
		if b, err := os.ReadFile(filepath.Join("..", "..", "..", "..", "shared", "fixtures", rel)); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tok, err := Parse(data)
		if err != nil {
			return
		}
		for _, text := range []string{"", "a b  ab\n\tab", "Führer 🦙 ½ ab<s>"} {
			ids := tok.Encode(text, true)
			_ = tok.Decode(ids, false)
			_ = tok.Decode(ids, true)
		}
		_ = tok.Decode([]int32{-1, 0, 1 << 30}, false)
	})
}

// FuzzParseWithConfig feeds arbitrary tokenizer_config.json bytes beside a
// small tokenizer.json: the result is a tokenizer or an error, never a
// panic.
func FuzzParseWithConfig(f *testing.F) {
	tok := []byte(`{"model":{"type":"BPE","vocab":{"<s>":0,"</s>":1,"a":2},"merges":[]},
		"added_tokens":[{"id":1,"content":"</s>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}]}`)
	for _, seed := range []string{
		`{}`, `{"tokenizer_class":"LlamaTokenizer","add_eos_token":true}`, `{"tokenizer_class":"LlamaTokenizer","bos_token":null}`,
		`{"added_tokens_decoder":{"1":{"content":"</s>","lstrip":true,"normalized":false,"special":true}},"bos_token":{"content":"<s>"}}`,
		`{"additional_special_tokens":["<s>",{"content":"a","single_word":true}],"extra_special_tokens":{"x":"a"}}`,
		`{"add_bos_token":true,"bos_token":"<s>"}`, `{"added_tokens_decoder":[]}`, `null`, `[]`, `{`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, config []byte) {
		got, err := ParseWithConfig(tok, config)
		if err != nil {
			return
		}
		_ = got.Decode(got.Encode("a<s> </s>a", true), true)
	})
}
