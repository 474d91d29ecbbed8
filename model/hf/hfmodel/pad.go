package hfmodel

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/alignflow/alignflow/model/hf/chattemplate"
)

// A reward model exported for transformers is read by its sequence
// classification head at the last token that is not the pad id
// (transformers' LlamaForSequenceClassification.forward, and the shared
// GenericForSequenceClassification: `non_pad_mask = (input_ids !=
// self.config.pad_token_id)`, `last_non_pad_token = (token_indices *
// non_pad_mask).argmax(-1)`; without a pad_token_id it refuses batches of
// more than one). alignflow trains and scores at a sequence's last token,
// so the exported pad_token_id must be an id no scored sequence ends with:
// where it were (a pad set to the EOS, the usual fix), transformers would
// read one token earlier than alignflow trained.

// RewardPad chooses the pad_token_id of a reward model exported from this
// model: the first of config.json's pad_token_id, tokenizer_config.json's
// pad_token and unk_token, and the BOS that is a token and not one of
// ending (the ids a scored sequence can end with: the EOS ids, a chat
// template's end of turn and what it writes after it). It fails, naming
// the candidates and why each is refused, when none will do.
func (d *Description) RewardPad(ending []int32) (int32, error) {
	type candidate struct {
		from string
		id   int32
		ok   bool
	}
	var cands []candidate
	var cfg struct {
		Pad *int32 `json:"pad_token_id"`
		BOS *int32 `json:"bos_token_id"`
	}
	if b, ok := d.Files[ConfigFile]; ok && json.Unmarshal(b, &cfg) == nil && cfg.Pad != nil {
		cands = append(cands, candidate{ConfigFile + "'s pad_token_id", *cfg.Pad, true})
	}
	for _, field := range []string{"pad_token", "unk_token"} {
		if text := tokenizerConfigToken(d.Files[chattemplate.ConfigFile], field); text != "" {
			id, ok := d.Tokenizer.TokenID(text)
			cands = append(cands, candidate{fmt.Sprintf("%s's %s %q", chattemplate.ConfigFile, field, text), id, ok})
		}
	}
	if cfg.BOS != nil {
		cands = append(cands, candidate{ConfigFile + "'s bos_token_id", *cfg.BOS, true})
	}
	var refused []string
	for _, c := range cands {
		switch {
		case !c.ok:
			refused = append(refused, c.from+" is not a token")
		case c.id < 0 || int(c.id) >= d.Tokenizer.VocabSize():
			refused = append(refused, fmt.Sprintf("%s %d is outside the vocabulary", c.from, c.id))
		case slices.Contains(ending, c.id):
			refused = append(refused, fmt.Sprintf("%s %d ends scored sequences (ending ids %v)", c.from, c.id, ending))
		default:
			return c.id, nil
		}
	}
	if len(refused) == 0 {
		refused = append(refused, "neither file names one")
	}
	return 0, fmt.Errorf("%s: no pad_token_id for the exported reward model that never ends a scored sequence (transformers reads the last token that is not the pad): %s; give %s a pad_token that is none of the ending ids %v",
		d.Dir, strings.Join(refused, "; "), chattemplate.ConfigFile, ending)
}

// tokenizerConfigToken is a token tokenizer_config.json names, written as
// a string or as an AddedToken object; "" when it names none.
func tokenizerConfigToken(b []byte, field string) string {
	var m map[string]json.RawMessage
	if json.Unmarshal(b, &m) != nil {
		return ""
	}
	var s string
	if json.Unmarshal(m[field], &s) == nil {
		return s
	}
	var obj struct {
		Content string `json:"content"`
	}
	if json.Unmarshal(m[field], &obj) == nil {
		return obj.Content
	}
	return ""
}

// WithPad is a config.json with pad_token_id set, every other field as it
// was.
func WithPad(config []byte, pad int32) ([]byte, error) {
	var m map[string]any
	if err := json.Unmarshal(config, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", ConfigFile, err)
	}
	m["pad_token_id"] = pad
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
