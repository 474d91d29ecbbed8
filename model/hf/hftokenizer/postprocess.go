package hftokenizer

import (
	"encoding/json"
	"fmt"
	"slices"
)

// template is what a post-processor adds around a single sequence: the ids
// before it and after it. It is a value rather than a function so that
// tokenizer_config.json's add_bos_token and add_eos_token can be compared
// with it and rebuild it (config.go).
type template struct{ before, after []int32 }

func (p *template) apply(ids []int32) []int32 {
	out := make([]int32, 0, len(p.before)+len(ids)+len(p.after))
	return append(append(append(out, p.before...), ids...), p.after...)
}

// equal reports whether p and q add the same ids (nil adds none).
func (p *template) equal(q *template) bool {
	var a, b template
	if p != nil {
		a = *p
	}
	if q != nil {
		b = *q
	}
	return slices.Equal(a.before, b.before) && slices.Equal(a.after, b.after)
}

var postProcessorTypes = []string{"TemplateProcessing", "ByteLevel", "Sequence"}

// parsePostProcessor reads a post-processor; nil when it adds nothing.
func parsePostProcessor(raw json.RawMessage, field string, lookup func(string) (int32, bool)) (*template, error) {
	typ, err := componentType(raw, field)
	if err != nil || typ == "" {
		return nil, err
	}
	switch typ {
	case "Sequence":
		seq, err := sequence(raw, "processors", field, func(r json.RawMessage, f string) (*template, error) { return parsePostProcessor(r, f, lookup) })
		if err != nil {
			return nil, err
		}
		// Each processor wraps what the ones before it made.
		all := &template{}
		for _, p := range seq {
			all.before = append(slices.Clone(p.before), all.before...)
			all.after = append(all.after, p.after...)
		}
		return all, nil
	case "ByteLevel":
		return nil, nil // it only trims offsets, which alignflow does not keep
	case "TemplateProcessing":
		var v struct {
			Single []struct {
				SpecialToken *struct {
					ID string `json:"id"`
				} `json:"SpecialToken"`
				Sequence *struct {
					ID string `json:"id"`
				} `json:"Sequence"`
			} `json:"single"`
			SpecialTokens map[string]struct {
				IDs []int32 `json:"ids"`
			} `json:"special_tokens"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		p := &template{}
		seen := false
		for i, item := range v.Single {
			switch {
			case item.Sequence != nil:
				if item.Sequence.ID != "A" {
					return nil, fmt.Errorf("%s.single[%d]: sequence %q (a single sequence is A)", field, i, item.Sequence.ID)
				}
				seen = true
			case item.SpecialToken != nil:
				st, ok := v.SpecialTokens[item.SpecialToken.ID]
				ids := st.IDs
				if !ok {
					id, found := lookup(item.SpecialToken.ID)
					if !found {
						return nil, fmt.Errorf("%s.single[%d]: special token %q is not defined", field, i, item.SpecialToken.ID)
					}
					ids = []int32{id}
				}
				if seen {
					p.after = append(p.after, ids...)
				} else {
					p.before = append(p.before, ids...)
				}
			default:
				return nil, fmt.Errorf("%s.single[%d]: neither SpecialToken nor Sequence", field, i)
			}
		}
		return p, nil
	}
	return nil, unsupported(field+".type", typ, postProcessorTypes)
}
