package hftokenizer

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// This file applies a tokenizer_config.json over tokenizer.json as
// transformers 4 (with tokenizers 0.22 or 0.23) does when AutoTokenizer
// loads a fast tokenizer:
//
//   - transformers/src/transformers/tokenization_utils_base.py:
//     PreTrainedTokenizerBase._from_pretrained reads added_tokens_decoder
//     (a file without one gets tokenizer.json's own added tokens) and swaps
//     each of bos_token, eos_token, ... (not additional_special_tokens) for
//     the decoder's token of that content;
//   - transformers/src/transformers/tokenization_utils_fast.py:
//     PreTrainedTokenizerFast.__init__ adds every token of the decoder
//     again, then every named special token given as an AddedToken, or as
//     text that is no added token yet, marking special those named;
//     tokenizers' AddedVocabulary::add_tokens keeps the id of the content
//     and takes the new single_word, lstrip and rstrip, and a token once
//     special stays special;
//   - transformers/src/transformers/models/llama/tokenization_llama_fast.py:
//     LlamaTokenizerFast.__init__ replaces the post-processor with
//     update_post_processor's template: bos_token if add_bos_token (default
//     true), the sequence, eos_token if add_eos_token (default false).
//     Other classes keep tokenizer.json's (transformers issue #30947).
//
// What those versions do differently (a changed normalized flag, the
// flags of other classes), or what would need what alignflow does not have
// (a token with a new id, tokenizer.model), is refused naming both files
// and the token.

// llamaClasses are the tokenizer_class values whose fast tokenizer is
// LlamaTokenizerFast (AutoTokenizer adds "Fast" to a class without it).
var llamaClasses = []string{"LlamaTokenizer", "LlamaTokenizerFast"}

// namedTokenFields are the special-token attributes of transformers'
// SpecialTokensMixin, each one token.
var namedTokenFields = []string{"bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"}

// configToken is an added token as tokenizer_config.json gives it.
type configToken struct {
	field   string // where the file gives it
	id      int    // the id it gives, -1 for none
	content string
	// object is whether the file gives its flags (an AddedToken), not
	// only its text.
	object bool
	// listed is whether it is one of additional_special_tokens or
	// extra_special_tokens, which _from_pretrained does not swap for the
	// decoder's token.
	listed                     bool
	singleWord, lstrip, rstrip bool
	special                    bool
	normalized                 *bool // nil: not special, as tokenizers' AddedToken defaults it
}

func (c configToken) isNormalized() bool {
	if c.normalized != nil {
		return *c.normalized
	}
	return !c.special
}

// tokenizerConfig is what of a tokenizer_config.json changes the ids.
type tokenizerConfig struct {
	class                  string
	addBOS, addEOS         *bool
	addPrefixSpace         *bool
	fromSlow, splitSpecial bool
	decoder                []configToken // by id; nil with no added_tokens_decoder
	named                  []configToken // the special tokens it names
	bos, eos               string        // bos_token's and eos_token's content ("" for none)
}

func (t *Tokenizer) applyConfig(data []byte) error {
	c, err := readConfig(data)
	if err != nil {
		return fmt.Errorf("%s: %w", ConfigFile, err)
	}
	switch {
	case c.fromSlow:
		return fmt.Errorf("%s: from_slow: true makes transformers build the tokenizer from tokenizer.model instead of %s, which alignflow does not do", ConfigFile, File)
	case c.splitSpecial:
		return fmt.Errorf("%s: split_special_tokens: true (special tokens encoded as plain text) is not supported; only false", ConfigFile)
	case c.addPrefixSpace != nil && slices.Contains(llamaClasses, c.class):
		return fmt.Errorf("%s: add_prefix_space makes transformers' %s build the tokenizer from tokenizer.model instead of %s (LlamaTokenizerFast.__init__ sets from_slow), which alignflow does not do", ConfigFile, c.class, File)
	}
	if err := t.addConfigTokens(c); err != nil {
		return err
	}
	return t.applyBOSEOS(c)
}

// addConfigTokens adds the decoder's tokens and the named special tokens
// as PreTrainedTokenizerFast.__init__ does.
func (t *Tokenizer) addConfigTokens(c *tokenizerConfig) error {
	decoder := c.decoder
	if decoder == nil {
		// An older file: the decoder is tokenizer.json's own added tokens,
		// which adding again only marks special those named.
		for i, a := range t.added {
			n := a.Normalized
			decoder = append(decoder, configToken{field: fmt.Sprintf("(%s's added_tokens[%d])", File, i), id: a.ID, content: a.Content, object: true,
				singleWord: a.SingleWord, lstrip: a.LStrip, rstrip: a.RStrip, special: a.Special, normalized: &n})
		}
	}
	named := map[string]bool{}
	for _, n := range c.named {
		named[n.content] = true
	}
	add := slices.Clone(decoder)
	for _, n := range c.named {
		decoded := slices.ContainsFunc(decoder, func(d configToken) bool { return d.content == n.content })
		switch {
		case n.object && !(decoded && !n.listed): // not swapped for the decoder's token
			add = append(add, n)
		case !n.object && !decoded && t.addedIndex(n.content) < 0:
			add = append(add, n) // as AddedToken(content, special=True)
		}
	}
	for _, a := range add {
		a.special = a.special || named[a.content]
		if err := t.addConfigToken(a); err != nil {
			return err
		}
	}
	return nil
}

func (t *Tokenizer) addedIndex(content string) int {
	return slices.IndexFunc(t.added, func(a addedToken) bool { return a.Content == content })
}

// addConfigToken adds one token, or changes the flags of the added token
// with its content.
func (t *Tokenizer) addConfigToken(c configToken) error {
	at := fmt.Sprintf("%s %s %q", ConfigFile, c.field, shorten(c.content, 40))
	i := t.addedIndex(c.content)
	var id int32
	switch v, ok := t.model.vocab[c.content]; {
	case i >= 0:
		id = int32(t.added[i].ID)
	case ok:
		id = v
	default:
		return fmt.Errorf("%s: not a token of %s (transformers would add it with a new id, which the model's embeddings do not have)", at, File)
	}
	if c.id >= 0 && c.id != int(id) {
		return fmt.Errorf("%s: id %d, but it is id %d in %s", at, c.id, id, File)
	}
	if i < 0 {
		t.added = append(t.added, addedToken{ID: int(id), Content: c.content, SingleWord: c.singleWord, LStrip: c.lstrip, RStrip: c.rstrip,
			Normalized: c.isNormalized(), Special: c.special})
	} else {
		a := &t.added[i]
		if a.Normalized != c.isNormalized() {
			return fmt.Errorf("%s: normalized %v, but %v in %s; the tokenizers versions transformers 4 runs on differ in which one finds it (0.22 keeps %s's for a special token, 0.23 takes %s's): make the two files agree",
				at, c.isNormalized(), a.Normalized, File, File, ConfigFile)
		}
		a.SingleWord, a.LStrip, a.RStrip = c.singleWord, c.lstrip, c.rstrip
		a.Special = a.Special || c.special
	}
	if c.special {
		t.special[id] = true
	}
	return nil
}

// applyBOSEOS rebuilds the post-processor of a Llama tokenizer from
// add_bos_token and add_eos_token. For other classes transformers 4 keeps
// tokenizer.json's and transformers 5 builds one from whichever flags are
// given (tokenization_utils_tokenizers.py: TokenizersBackend.__init__): a
// file whose flags ask for other special tokens than tokenizer.json adds
// is refused.
func (t *Tokenizer) applyBOSEOS(c *tokenizerConfig) error {
	llama := slices.Contains(llamaClasses, c.class)
	if !llama && c.addBOS == nil && c.addEOS == nil {
		return nil
	}
	addBOS := c.addBOS != nil && *c.addBOS || llama && c.addBOS == nil
	addEOS := c.addEOS != nil && *c.addEOS
	want := &template{}
	for _, side := range []struct {
		add        bool
		flag, name string
		ids        *[]int32
	}{{addBOS, "add_bos_token", c.bos, &want.before}, {addEOS, "add_eos_token", c.eos, &want.after}} {
		switch {
		case !side.add:
		case side.name == "" && llama:
			return fmt.Errorf("%s: %s is true but it names no %s", ConfigFile, side.flag, strings.TrimPrefix(side.flag, "add_"))
		case side.name == "": // transformers 5 leaves it out
		default:
			id, ok := t.TokenID(side.name)
			if !ok {
				return fmt.Errorf("%s: %s is true but %q is not a token of %s", ConfigFile, side.flag, shorten(side.name, 40), File)
			}
			*side.ids = []int32{id}
		}
	}
	if llama {
		t.post = want
		return nil
	}
	if !want.equal(t.post) {
		var have template
		if t.post != nil {
			have = *t.post
		}
		return fmt.Errorf("%s: add_bos_token %s and add_eos_token %s ask for %s before a sequence and %s after it, but %s's post_processor adds %s and %s, which transformers 4 keeps for tokenizer_class %q (only Llama's rebuilds it) and transformers 5 does not: make the two files agree",
			ConfigFile, flag(c.addBOS), flag(c.addEOS), t.describe(want.before), t.describe(want.after), File, t.describe(have.before), t.describe(have.after), c.class)
	}
	return nil
}

func flag(b *bool) string {
	if b == nil {
		return "unset"
	}
	return strconv.FormatBool(*b)
}

// describe names the tokens of ids for an error.
func (t *Tokenizer) describe(ids []int32) string {
	if len(ids) == 0 {
		return "nothing"
	}
	names := make([]string, len(ids))
	for i, id := range ids {
		names[i] = strconv.Quote(t.Token(id))
	}
	return strings.Join(names, " ")
}

// readConfig reads what of a tokenizer_config.json changes the ids. Each
// error names the field.
func readConfig(data []byte) (*tokenizerConfig, error) {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("not a tokenizer_config.json: %w", err)
	}
	c := &tokenizerConfig{}
	if err := decodeField(doc, "tokenizer_class", &c.class, "a string"); err != nil {
		return nil, err
	}
	for field, dst := range map[string]**bool{"add_bos_token": &c.addBOS, "add_eos_token": &c.addEOS, "add_prefix_space": &c.addPrefixSpace} {
		if err := decodeField(doc, field, dst, "true, false or null"); err != nil {
			return nil, err
		}
	}
	for field, dst := range map[string]*bool{"from_slow": &c.fromSlow, "split_special_tokens": &c.splitSpecial} {
		if err := decodeField(doc, field, dst, "true, false or null"); err != nil {
			return nil, err
		}
	}
	if raw := doc["added_tokens_decoder"]; !isNull(raw) {
		var dec map[string]json.RawMessage
		if err := json.Unmarshal(raw, &dec); err != nil {
			return nil, fmt.Errorf("added_tokens_decoder: not an object of ids to AddedTokens")
		}
		c.decoder = []configToken{}
		for key, raw := range dec {
			field := fmt.Sprintf("added_tokens_decoder[%q]", key)
			id, err := strconv.Atoi(key)
			if err != nil || id < 0 {
				return nil, fmt.Errorf("%s: %q is not an id", field, key)
			}
			tok, err := readToken(raw, field)
			if err != nil {
				return nil, err
			}
			if !tok.object {
				return nil, fmt.Errorf("%s: not an AddedToken (an object with content)", field)
			}
			tok.id = id
			c.decoder = append(c.decoder, tok)
		}
		slices.SortFunc(c.decoder, func(a, b configToken) int { return cmp.Compare(a.id, b.id) })
	}
	// LlamaTokenizerFast's own defaults stand for a token the file does
	// not name at all (null names none).
	defaults := map[string]string{}
	if slices.Contains(llamaClasses, c.class) {
		defaults = map[string]string{"bos_token": `"<s>"`, "eos_token": `"</s>"`, "unk_token": `"<unk>"`}
	}
	for _, field := range namedTokenFields {
		raw, ok := doc[field]
		if !ok {
			raw = json.RawMessage(defaults[field])
		}
		if isNull(raw) {
			continue
		}
		tok, err := readToken(raw, field)
		if err != nil {
			return nil, err
		}
		if !ok {
			tok.field += " (LlamaTokenizerFast's default)"
		}
		c.named = append(c.named, tok)
		switch field {
		case "bos_token":
			c.bos = tok.content
		case "eos_token":
			c.eos = tok.content
		}
	}
	for _, field := range []string{"additional_special_tokens", "extra_special_tokens"} {
		toks, err := readTokens(doc[field], field)
		if err != nil {
			return nil, err
		}
		for _, tok := range toks {
			tok.listed = true
			c.named = append(c.named, tok)
		}
	}
	return c, nil
}

// readTokens reads a list of tokens, or an object of names to tokens
// (extra_special_tokens), in order.
func readTokens(raw json.RawMessage, field string) ([]configToken, error) {
	if isNull(raw) {
		return nil, nil
	}
	var list []json.RawMessage
	var names []string
	if err := json.Unmarshal(raw, &list); err != nil {
		var byName map[string]json.RawMessage
		if err := json.Unmarshal(raw, &byName); err != nil {
			return nil, fmt.Errorf("%s: neither a list of tokens nor an object of names to tokens", field)
		}
		names = slices.Sorted(maps.Keys(byName))
		for _, n := range names {
			list = append(list, byName[n])
		}
	}
	var out []configToken
	for i, item := range list {
		f := fmt.Sprintf("%s[%d]", field, i)
		if names != nil {
			f = fmt.Sprintf("%s[%q]", field, names[i])
		}
		tok, err := readToken(item, f)
		if err != nil {
			return nil, err
		}
		out = append(out, tok)
	}
	return out, nil
}

// readToken reads a token given as its text or as an AddedToken object.
func readToken(raw json.RawMessage, field string) (configToken, error) {
	tok := configToken{field: field, id: -1}
	if err := json.Unmarshal(raw, &tok.content); err == nil {
		if tok.content == "" {
			return tok, fmt.Errorf("%s: empty", field)
		}
		return tok, nil
	}
	var v struct {
		Content    *string `json:"content"`
		SingleWord bool    `json:"single_word"`
		LStrip     bool    `json:"lstrip"`
		RStrip     bool    `json:"rstrip"`
		Normalized *bool   `json:"normalized"`
		Special    bool    `json:"special"`
	}
	if err := json.Unmarshal(raw, &v); err != nil || v.Content == nil || *v.Content == "" {
		return tok, fmt.Errorf("%s: neither a token's text nor an AddedToken (an object with content)", field)
	}
	tok.content, tok.object = *v.Content, true
	tok.singleWord, tok.lstrip, tok.rstrip, tok.normalized, tok.special = v.SingleWord, v.LStrip, v.RStrip, v.Normalized, v.Special
	return tok, nil
}

// decodeField decodes doc[field] into dst when the file has it (null
// leaves dst as it is), naming the field and what it may be otherwise.
func decodeField[T any](doc map[string]json.RawMessage, field string, dst *T, allowed string) error {
	raw, ok := doc[field]
	if !ok || isNull(raw) {
		return nil
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		return fmt.Errorf("%s: %s is not %s", field, shorten(string(raw), 40), allowed)
	}
	return nil
}

func isNull(raw json.RawMessage) bool {
	s := strings.TrimSpace(string(raw))
	return s == "" || s == "null"
}
