package hftokenizer

import (
	"encoding/json"
	"fmt"
)

// postProcessor adds the special tokens around an encoded sequence.
type postProcessor func(ids []int32) []int32

var postProcessorTypes = []string{"TemplateProcessing", "ByteLevel", "Sequence"}

func parsePostProcessor(raw json.RawMessage, field string, lookup func(string) (int32, bool)) (postProcessor, error) {
	typ, err := componentType(raw, field)
	if err != nil || typ == "" {
		return nil, err
	}
	switch typ {
	case "Sequence":
		seq, err := sequence(raw, "processors", field, func(r json.RawMessage, f string) (postProcessor, error) { return parsePostProcessor(r, f, lookup) })
		if err != nil {
			return nil, err
		}
		return func(ids []int32) []int32 {
			for _, p := range seq {
				ids = p(ids)
			}
			return ids
		}, nil
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
		var before, after []int32
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
					after = append(after, ids...)
				} else {
					before = append(before, ids...)
				}
			default:
				return nil, fmt.Errorf("%s.single[%d]: neither SpecialToken nor Sequence", field, i)
			}
		}
		return func(ids []int32) []int32 {
			out := make([]int32, 0, len(before)+len(ids)+len(after))
			out = append(append(append(out, before...), ids...), after...)
			return out
		}, nil
	}
	return nil, unsupported(field+".type", typ, postProcessorTypes)
}
