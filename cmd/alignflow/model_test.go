package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/internal/fixtures"
	"github.com/alignflow/alignflow/model/backend"
	"github.com/alignflow/alignflow/model/hf/hfmodel"
	"github.com/alignflow/alignflow/model/hf/safetensors"
	"github.com/alignflow/alignflow/model/lora"
	"github.com/alignflow/alignflow/model/tokenizer"
	"github.com/alignflow/alignflow/model/transformer"
	"github.com/alignflow/alignflow/policy"
	"github.com/alignflow/alignflow/reward"
)

func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	cmd := rootCmd()
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

// TestTokenizeAndGenerateStories runs the commands on the stories260K
// directory: tokenize gives run.c's prompt ids, generate at temperature 0
// continues as run.c did.
func TestTokenizeAndGenerateStories(t *testing.T) {
	dir := fixtures.Path(t, "models", "stories260K")
	f, err := os.Open(fixtures.Path(t, "models", "stories260K.greedy.jsonl"))
	require.NoError(t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan()
	sc.Scan() // the second case: "Once upon a time"
	var c struct {
		Prompt    string  `json:"prompt"`
		PromptIDs []int32 `json:"prompt_ids"`
		Generated []int32 `json:"generated_ids"`
	}
	require.NoError(t, json.Unmarshal(sc.Bytes(), &c))

	out, err := runCLI(t, "tokenize", "--model", dir, "--text", c.Prompt, "--json")
	require.NoError(t, err)
	var tok struct {
		Text string  `json:"text"`
		IDs  []int32 `json:"ids"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &tok))
	assert.Equal(t, c.Prompt, tok.Text)
	assert.Equal(t, c.PromptIDs, tok.IDs)
	out, err = runCLI(t, "tokenize", "--model", dir, "--text", c.Prompt, "--no-special-tokens", "--json")
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal([]byte(out), &tok))
	assert.Equal(t, c.PromptIDs[1:], tok.IDs, "no BOS")

	out, err = runCLI(t, "generate", "--model", dir, "--prompt", c.Prompt, "--max-tokens", "60", "--json")
	require.NoError(t, err)
	var gen struct {
		PromptIDs []int32 `json:"prompt_ids"`
		IDs       []int32 `json:"ids"`
		Text      string  `json:"text"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &gen))
	assert.Equal(t, c.PromptIDs, gen.PromptIDs)
	assert.Equal(t, c.Generated, gen.IDs)
	assert.Contains(t, gen.Text, "there was a little girl named Lily")
}

// TestTokenizeMessagesWithATemplate renders a chat with a tokenizer's
// chat template before encoding it.
func TestTokenizeMessagesWithATemplate(t *testing.T) {
	src := fixtures.Path(t, "tokenizers", "gpt2")
	dir := t.TempDir()
	b, err := os.ReadFile(filepath.Join(src, "tokenizer.json"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tokenizer.json"), b, 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), []byte(`{"eos_token": "<|endoftext|>",
		"chat_template": "{% for m in messages %}<{{ m.role }}>{{ m.content }}{{ eos_token }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"}`), 0o644))
	msgs := filepath.Join(dir, "chat.json")
	require.NoError(t, os.WriteFile(msgs, []byte(`[{"role": "user", "content": "hi"}]`), 0o644))
	out, err := runCLI(t, "tokenize", "--model", dir, "--messages", msgs, "--add-generation-prompt", "--json")
	require.NoError(t, err)
	var tok struct {
		Text string  `json:"text"`
		IDs  []int32 `json:"ids"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &tok))
	assert.Equal(t, "<user>hi<|endoftext|><assistant>", tok.Text)
	assert.Contains(t, tok.IDs, int32(50256), "the special token in the rendered text is one token")
}

// TestTokenizeRefusesAPoisonTemplate: a chat template that asks for three
// billion items (it grew the process to 22 GB before) fails at once,
// naming the template file and the bound.
func TestTokenizeRefusesAPoisonTemplate(t *testing.T) {
	dir := t.TempDir()
	b, err := os.ReadFile(filepath.Join(fixtures.Path(t, "tokenizers", "gpt2"), "tokenizer.json"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tokenizer.json"), b, 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "chat_template.jinja"), []byte(`{% for i in range(3000000000) %}x{% endfor %}`), 0o644))
	msgs := filepath.Join(dir, "chat.json")
	require.NoError(t, os.WriteFile(msgs, []byte(`[{"role": "user", "content": "hi"}]`), 0o644))
	_, err = runCLI(t, "tokenize", "--model", dir, "--messages", msgs)
	require.Error(t, err)
	assert.Contains(t, err.Error(), filepath.Join(dir, "chat_template.jinja"))
	assert.Contains(t, err.Error(), "range of 3000000000 items, more than 100000")
}

// TestGenerateFromACheckpoint generates with an alignflow policy
// checkpoint (the byte-level model) and refuses what cannot generate.
func TestGenerateFromACheckpoint(t *testing.T) {
	store, err := artifact.Open(t.TempDir())
	require.NoError(t, err)
	cfg := transformer.Config{Vocab: tokenizer.VocabSize, Dim: 32, Heads: 4, Layers: 1, Hidden: 64, MaxLen: 32}
	ref, err := store.PutWeights("runs/x/sft/policy.safetensors", policy.Init(cfg, 1))
	require.NoError(t, err)
	path := store.Abs(ref)
	out, err := runCLI(t, "generate", "--model", path, "--prompt", "hot?\n", "--max-tokens", "5", "--json")
	require.NoError(t, err)
	var gen struct {
		PromptIDs []int32 `json:"prompt_ids"`
		IDs       []int32 `json:"ids"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &gen))
	assert.Equal(t, append([]int32{tokenizer.BOS}, tokenizer.Encode("hot?\n")...), gen.PromptIDs)
	assert.LessOrEqual(t, len(gen.IDs), 5)

	_, err = runCLI(t, "generate", "--model", fixtures.Path(t, "tokenizers", "gpt2"), "--prompt", "x")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "a tokenizer without weights cannot generate")
	_, err = runCLI(t, "generate", "--model", path, "--prompt", "x", "--top-p", "2")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "--top-p must be in (0, 1]")
	_, err = runCLI(t, "tokenize", "--model", path)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "give --text S or --messages FILE")
	_, err = runCLI(t, "tokenize", "--model", filepath.Join(t.TempDir(), "nope"), "--text", "x")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "nope")
}

// TestScore scores with a reward model exported as a
// LlamaForSequenceClassification (built here on stories260K's backbone)
// and with an alignflow reward checkpoint: the printed attributes are the
// reward model's outputs at the last token, helpfulness the reward.
func TestScore(t *testing.T) {
	src := fixtures.Path(t, "models", "stories260K")
	hf, err := hfmodel.Load(src)
	require.NoError(t, err)
	rm, err := reward.InitFromBackbone(hf.Params, 4)
	require.NoError(t, err)
	assert.Nil(t, rm.Get(reward.HeadB), "a Hugging Face backbone's head has no bias")
	files := maps.Clone(hf.Files) // the exact bytes the model was read from
	dir := filepath.Join(t.TempDir(), "rm")
	require.NoError(t, hfmodel.ExportReward(dir, files, hf.Config.Transformer, rm, safetensors.F32))

	out, err := runCLI(t, "score", "--model", dir, "--prompt", "Once upon a time", "--response", "there was a cat.", "--json")
	require.NoError(t, err)
	var got struct {
		IDs        []int32            `json:"ids"`
		Attributes map[string]float64 `json:"attributes"`
		Reward     float64            `json:"reward"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &got))
	b, err := backend.New(backend.Go)
	require.NoError(t, err)
	want, err := reward.NewEngine(b, hf.Config.Transformer, rm).Score(rm, [][]int32{got.IDs}, 1)
	require.NoError(t, err)
	assert.Equal(t, int32(1), got.IDs[0], "BOS first")
	assert.Equal(t, int32(2), got.IDs[len(got.IDs)-1], "the head is read at the response's EOS")
	assert.InDelta(t, float64(want[0][0]), got.Reward, 1e-6)
	assert.InDelta(t, float64(want[0][4]), got.Attributes["verbosity"], 1e-6)
	assert.Equal(t, got.Reward, got.Attributes["helpfulness"])

	// An alignflow reward checkpoint of the bundled model.
	store, err := artifact.Open(t.TempDir())
	require.NoError(t, err)
	cfg := transformer.Config{Vocab: tokenizer.VocabSize, Dim: 32, Heads: 4, Layers: 1, Hidden: 64, MaxLen: 32}
	brm, err := reward.InitFromBackbone(policy.Init(cfg, 1), 2)
	require.NoError(t, err)
	ref, err := store.PutWeights("runs/x/reward/model.safetensors", brm)
	require.NoError(t, err)
	out, err = runCLI(t, "score", "--model", store.Abs(ref), "--prompt", "opposite of hot?", "--response", "cold", "--json")
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal([]byte(out), &got))
	assert.Equal(t, append(tokenizer.EncodePrompt("opposite of hot?"), tokenizer.EncodeResponse("cold")...), got.IDs)

	_, err = runCLI(t, "score", "--model", src, "--prompt", "x", "--response", "y")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "not a reward model")
}

// TestSlidingWindowBoundsGenerateAndScore: generate and score refuse a
// Mistral whose sliding_window (here 8) is shorter than the sequence they
// would run, naming both lengths and the field; within the window they run.
func TestSlidingWindowBoundsGenerateAndScore(t *testing.T) {
	src := fixtures.Path(t, "models", "stories260K")
	hf, err := hfmodel.Load(src)
	require.NoError(t, err)
	files := maps.Clone(hf.Files)
	var c map[string]any
	require.NoError(t, json.Unmarshal(files[hfmodel.ConfigFile], &c))
	c["architectures"], c["model_type"], c["sliding_window"] = []string{"MistralForCausalLM"}, "mistral", 8
	files[hfmodel.ConfigFile], err = json.Marshal(c)
	require.NoError(t, err)
	dir := filepath.Join(t.TempDir(), "mistral")
	require.NoError(t, hfmodel.Export(dir, files, hf.Config.Transformer, hf.Params, safetensors.F32))

	// "Once upon a time" is 5 tokens with BOS.
	_, err = runCLI(t, "generate", "--model", dir, "--prompt", "Once upon a time", "--max-tokens", "3")
	require.NoError(t, err)
	_, err = runCLI(t, "generate", "--model", dir, "--prompt", "Once upon a time", "--max-tokens", "4")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "the prompt's 5 tokens and --max-tokens 4: sequences of up to 9 tokens do not fit config.json's sliding_window 8")

	rm, err := reward.InitFromBackbone(hf.Params, 4)
	require.NoError(t, err)
	rmDir := filepath.Join(t.TempDir(), "rm")
	require.NoError(t, hfmodel.ExportReward(rmDir, files, hf.Config.Transformer, rm, safetensors.F32))
	_, err = runCLI(t, "score", "--model", rmDir, "--prompt", "Once", "--response", "a cat.")
	require.NoError(t, err)
	_, err = runCLI(t, "score", "--model", rmDir, "--prompt", "Once upon a time", "--response", "there was a cat.")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "do not fit config.json's sliding_window 8: MistralForCausalLM attends over at most the last 8 tokens")
}

// TestGenerateWithAnAdapter: generate --adapter merges a PEFT adapter into
// --model. A fresh one (B zero) changes nothing; a trained one changes the
// continuation; a reward model's adapter does not make a language model.
func TestGenerateWithAnAdapter(t *testing.T) {
	src := fixtures.Path(t, "models", "stories260K")
	hf, err := hfmodel.Load(src)
	require.NoError(t, err)
	ad, err := lora.Init(hf.Config.Transformer, lora.Config{Rank: 4, Alpha: 8, Targets: []string{"q_proj", "v_proj", "down_proj"}}, 1)
	require.NoError(t, err)
	fresh := filepath.Join(t.TempDir(), "fresh")
	require.NoError(t, hfmodel.ExportPEFT(fresh, hf.Config.Transformer, ad, hfmodel.TaskCausalLM, src))
	for _, n := range ad.Names() {
		for i := range ad.Get(n).Data {
			ad.Get(n).Data[i] += float32(i%5) * 0.05
		}
	}
	trained := filepath.Join(t.TempDir(), "trained")
	require.NoError(t, hfmodel.ExportPEFT(trained, hf.Config.Transformer, ad, hfmodel.TaskCausalLM, src))

	gen := func(args ...string) []int32 {
		out, err := runCLI(t, append([]string{"generate", "--model", src, "--prompt", "Once upon a time", "--max-tokens", "20", "--json"}, args...)...)
		require.NoError(t, err)
		var g struct {
			IDs []int32 `json:"ids"`
		}
		require.NoError(t, json.Unmarshal([]byte(out), &g))
		return g.IDs
	}
	plain := gen()
	assert.Equal(t, plain, gen("--adapter", fresh), "a fresh adapter changes nothing")
	assert.NotEqual(t, plain, gen("--adapter", trained), "a trained adapter changes the continuation")

	_, err = runCLI(t, "score", "--model", src, "--adapter", trained, "--prompt", "x", "--response", "y")
	assert.ErrorContains(t, err, "not a reward model", "a CAUSAL_LM adapter makes no reward model")
}
