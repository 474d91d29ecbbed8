package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/alignflow/alignflow/data/helpsteer"
	"github.com/alignflow/alignflow/model/backend"
	"github.com/alignflow/alignflow/model/hf/chattemplate"
	"github.com/alignflow/alignflow/model/lm"
	"github.com/alignflow/alignflow/policy"
	"github.com/alignflow/alignflow/reward"
)

// modelFlagHelp says what --model takes.
const modelFlagHelp = "a Hugging Face model directory, a tokenizer-only directory (tokenize), or an alignflow policy checkpoint (.safetensors)"

// tokenizeOptions are `alignflow tokenize`'s inputs and output.
type tokenizeOptions struct {
	out                 io.Writer
	model               string
	text, messages      string
	textSet             bool
	addGenerationPrompt bool
	noSpecialTokens     bool
	json                bool
}

func tokenizeCmd() *cobra.Command {
	o := tokenizeOptions{}
	cmd := &cobra.Command{
		Use:   "tokenize --model DIR (--text S | --messages FILE)",
		Short: "Print the token ids a model's tokenizer gives for a text or a chat",
		Long: `Encodes --text with the model's tokenizer (with its special tokens, such as BOS, unless
--no-special-tokens), or renders --messages (a JSON list of {"role", "content"}) with
the model's chat template (the plain format for a model without one) and encodes that.
--json prints {"text": what was encoded, "ids": [...]}.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.out = cmd.OutOrStdout()
			o.textSet = cmd.Flags().Changed("text")
			return tokenizeRun(o)
		},
	}
	cmd.Flags().StringVar(&o.model, "model", "", modelFlagHelp)
	cmd.Flags().StringVar(&o.text, "text", "", "text to encode")
	cmd.Flags().StringVar(&o.messages, "messages", "", `JSON file with a list of {"role", "content"} messages, rendered by the chat template`)
	cmd.Flags().BoolVar(&o.addGenerationPrompt, "add-generation-prompt", false, "with --messages: end with the start of the assistant's turn")
	cmd.Flags().BoolVar(&o.noSpecialTokens, "no-special-tokens", false, "leave out the special tokens the tokenizer adds (BOS)")
	cmd.Flags().BoolVar(&o.json, "json", false, `print {"text", "ids"}`)
	return cmd
}

// encodeInput returns the text to encode: --text, or --messages rendered.
func encodeInput(m *lm.Model, text, messages string, addGenerationPrompt, textSet bool) (string, error) {
	switch {
	case messages != "" && textSet:
		return "", fmt.Errorf("give --text or --messages, not both")
	case messages != "":
		b, err := os.ReadFile(messages)
		if err != nil {
			return "", fmt.Errorf("--messages: %w", err)
		}
		var msgs []chattemplate.Message
		dec := json.NewDecoder(strings.NewReader(string(b)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&msgs); err != nil {
			return "", fmt.Errorf("--messages %s: want a JSON list of {\"role\", \"content\"}: %w", messages, err)
		}
		for i, msg := range msgs {
			if msg.Role == "" {
				return "", fmt.Errorf("--messages %s: message %d has no role", messages, i)
			}
		}
		return m.RenderChat(msgs, addGenerationPrompt)
	case textSet:
		return text, nil
	}
	return "", fmt.Errorf("give --text S or --messages FILE")
}

func tokenizeRun(o tokenizeOptions) error {
	if o.model == "" {
		return fmt.Errorf("--model is required (%s)", modelFlagHelp)
	}
	m, err := lm.Open(o.model, false)
	if err != nil {
		return err
	}
	text, err := encodeInput(m, o.text, o.messages, o.addGenerationPrompt, o.textSet)
	if err != nil {
		return err
	}
	ids, err := m.Tokenizer.EncodeChecked(text, !o.noSpecialTokens)
	if err != nil {
		return err
	}
	if o.json {
		return json.NewEncoder(o.out).Encode(struct {
			Text string  `json:"text"`
			IDs  []int32 `json:"ids"`
		}{text, nonNil(ids)})
	}
	fmt.Fprintf(o.out, "%d tokens: %s\n", len(ids), joinIDs(ids))
	return nil
}

// generateOptions are `alignflow generate`'s inputs and output.
type generateOptions struct {
	out              io.Writer
	model            string
	adapter          string
	prompt, messages string
	promptSet        bool
	maxTokens        int
	temperature      float64
	topP             float64
	seed             uint64
	backend          string
	json             bool
}

func generateCmd() *cobra.Command {
	o := generateOptions{}
	cmd := &cobra.Command{
		Use:   "generate --model DIR (--prompt S | --messages FILE)",
		Short: "Continue a prompt with a model (greedy at temperature 0)",
		Long: `Samples a continuation of --prompt (raw text, encoded with the tokenizer's special tokens;
no chat template), or of --messages rendered by the chat template with the assistant's
turn started. It stops at the model's EOS or after --max-tokens. --json prints
{"prompt_ids": [...], "ids": [the generated tokens], "text": their text}.
--adapter DIR merges a PEFT LoRA adapter (CAUSAL_LM, such as alignflow export
--format peft writes) into --model's weights first.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.out = cmd.OutOrStdout()
			o.promptSet = cmd.Flags().Changed("prompt")
			return generateRun(o)
		},
	}
	cmd.Flags().StringVar(&o.model, "model", "", modelFlagHelp)
	cmd.Flags().StringVar(&o.adapter, "adapter", "", "a PEFT LoRA adapter directory (CAUSAL_LM) of --model to generate with, merged into its weights")
	cmd.Flags().StringVar(&o.prompt, "prompt", "", "text to continue")
	cmd.Flags().StringVar(&o.messages, "messages", "", `JSON file with a list of {"role", "content"} messages`)
	cmd.Flags().IntVar(&o.maxTokens, "max-tokens", 64, "most tokens to generate")
	cmd.Flags().Float64Var(&o.temperature, "temperature", 0, "sampling temperature; 0 is greedy")
	cmd.Flags().Float64Var(&o.topP, "top-p", 1, "nucleus sampling mass, in (0, 1]")
	cmd.Flags().Uint64Var(&o.seed, "seed", 1, "seed of the sampling stream")
	cmd.Flags().StringVar(&o.backend, "backend", backend.Go, "graph backend")
	cmd.Flags().BoolVar(&o.json, "json", false, `print {"prompt_ids", "ids", "text"}`)
	return cmd
}

func generateRun(o generateOptions) error {
	switch {
	case o.model == "":
		return fmt.Errorf("--model is required (%s)", modelFlagHelp)
	case o.maxTokens <= 0:
		return fmt.Errorf("--max-tokens must be positive, got %d", o.maxTokens)
	case o.temperature < 0:
		return fmt.Errorf("--temperature must not be negative, got %v", o.temperature)
	case !(o.topP > 0 && o.topP <= 1):
		return fmt.Errorf("--top-p must be in (0, 1], got %v", o.topP)
	}
	m, err := lm.Open(o.model, true)
	if err != nil {
		return err
	}
	if m.Params == nil {
		return fmt.Errorf("--model %s: a tokenizer without weights cannot generate", o.model)
	}
	if o.adapter != "" {
		if err := m.ApplyAdapter(o.adapter); err != nil {
			return err
		}
	}
	text, err := encodeInput(m, o.prompt, o.messages, true, o.promptSet)
	if err != nil {
		return err
	}
	ids, err := m.Tokenizer.EncodeChecked(text, true)
	if err != nil {
		return err
	}
	if len(ids) == 0 {
		return fmt.Errorf("the prompt encodes to no tokens")
	}
	cfg := *m.Config
	if len(ids) >= cfg.MaxLen {
		return fmt.Errorf("the prompt is %d tokens; the model reads at most %d", len(ids), cfg.MaxLen)
	}
	// The KV cache needs room for the prompt and the response only.
	cfg.MaxLen = min(cfg.MaxLen, len(ids)+o.maxTokens)
	if m.HF != nil {
		if err := m.HF.Config.CheckLen(cfg.MaxLen); err != nil {
			return fmt.Errorf("--model %s: the prompt's %d tokens and --max-tokens %d: %w", o.model, len(ids), o.maxTokens, err)
		}
	}
	b, err := backend.New(o.backend)
	if err != nil {
		return fmt.Errorf("--backend: %w", err)
	}
	stop := m.EOS // and the chat template's end of turn, where it has one
	if c, err := m.Codec(); err == nil {
		stop = c.Stop()
	}
	eng := policy.NewEngine(b, cfg, m.Params)
	samples, err := eng.Generate(m.Params, [][]int32{ids}, 1,
		policy.SampleOptions{Temperature: o.temperature, TopP: o.topP, MaxTokens: o.maxTokens, Stop: stop}, rand.New(rand.NewPCG(o.seed, 0x9e4)))
	if err != nil {
		return err
	}
	s := samples[0]
	out := m.Tokenizer.Decode(s.Tokens, true)
	if o.json {
		return json.NewEncoder(o.out).Encode(struct {
			PromptIDs []int32 `json:"prompt_ids"`
			IDs       []int32 `json:"ids"`
			Text      string  `json:"text"`
		}{ids, nonNil(s.Tokens), out})
	}
	end := "stopped at EOS"
	if !s.Ended {
		end = fmt.Sprintf("stopped after --max-tokens %d", o.maxTokens)
	}
	fmt.Fprintf(o.out, "%s\n(%d prompt tokens, %d generated, %s)\n", out, len(ids), len(s.Tokens), end)
	return nil
}

func nonNil(ids []int32) []int32 {
	if ids == nil {
		return []int32{}
	}
	return ids
}

func joinIDs(ids []int32) string {
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = fmt.Sprint(id)
	}
	return strings.Join(parts, " ")
}

// scoreOptions are `alignflow score`'s inputs and output.
type scoreOptions struct {
	out              io.Writer
	model            string
	adapter          string
	prompt, response string
	backend          string
	json             bool
}

func scoreCmd() *cobra.Command {
	o := scoreOptions{}
	cmd := &cobra.Command{
		Use:   "score --model DIR --prompt S --response S",
		Short: "Score a response to a prompt with a reward model: the five HelpSteer attributes and the reward",
		Long: `Reads the prompt (a HelpSteer2 prompt, rendered with the model's chat template up to the
assistant's turn, as reward-model training reads it) and the response ending in EOS,
and prints the reward model's five outputs, read at the last token; helpfulness is the
reward. --model is an XForSequenceClassification directory (alignflow export --what
reward writes one) or an alignflow reward checkpoint. --json prints {"ids": the tokens
read, "attributes": {...}, "reward": ...}. --adapter DIR merges a PEFT LoRA adapter
(SEQ_CLS, with its score layer, as export --what reward --format peft writes) into
--model, which may then be the language model the adapter was trained from.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.out = cmd.OutOrStdout()
			return scoreRun(o)
		},
	}
	cmd.Flags().StringVar(&o.model, "model", "", "a reward model: a classifier directory or an alignflow reward checkpoint (.safetensors)")
	cmd.Flags().StringVar(&o.adapter, "adapter", "", "a PEFT LoRA adapter directory (SEQ_CLS, with its score layer) of --model, merged into its weights: --model may then be the language model it was trained from")
	cmd.Flags().StringVar(&o.prompt, "prompt", "", "the prompt")
	cmd.Flags().StringVar(&o.response, "response", "", "the response")
	cmd.Flags().StringVar(&o.backend, "backend", backend.Go, "graph backend")
	cmd.Flags().BoolVar(&o.json, "json", false, `print {"ids", "attributes", "reward"}`)
	return cmd
}

func scoreRun(o scoreOptions) error {
	if o.model == "" {
		return fmt.Errorf("--model is required (a classifier directory or an alignflow reward checkpoint)")
	}
	m, err := lm.Open(o.model, true)
	if err != nil {
		return err
	}
	if o.adapter != "" {
		if err := m.ApplyAdapter(o.adapter); err != nil {
			return err
		}
	}
	if !m.Reward {
		return fmt.Errorf("--model %s: not a reward model (a classifier directory, XForSequenceClassification, or runs/<id>/reward/.../model.safetensors)", o.model)
	}
	codec, err := m.Codec()
	if err != nil {
		return err
	}
	ids, _, _, err := codec.Sequence(o.prompt, o.response, m.Config.MaxLen)
	if err != nil {
		return fmt.Errorf("--prompt, --response: %w", err)
	}
	if m.HF != nil && m.HF.Config != nil {
		if err := m.HF.Config.CheckLen(len(ids)); err != nil {
			return fmt.Errorf("--model %s: the prompt and response's %d tokens: %w", o.model, len(ids), err)
		}
	}
	b, err := backend.New(o.backend)
	if err != nil {
		return fmt.Errorf("--backend: %w", err)
	}
	scores, err := reward.NewEngine(b, *m.Config, m.Params).Score(m.Params, [][]int32{ids}, 1)
	if err != nil {
		return err
	}
	attrs := map[string]float64{}
	for i, name := range helpsteer.AttributeNames {
		attrs[name] = float64(scores[0][i])
	}
	r := attrs[helpsteer.AttributeNames[reward.Helpfulness]]
	if o.json {
		return json.NewEncoder(o.out).Encode(struct {
			IDs        []int32            `json:"ids"`
			Attributes map[string]float64 `json:"attributes"`
			Reward     float64            `json:"reward"`
		}{ids, attrs, r})
	}
	fmt.Fprintf(o.out, "reward %.4f (%d tokens read)\n", r, len(ids))
	for _, name := range helpsteer.AttributeNames {
		fmt.Fprintf(o.out, "  %-12s %8.4f\n", name, attrs[name])
	}
	return nil
}
