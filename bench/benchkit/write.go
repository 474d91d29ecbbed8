package benchkit

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/alignflow/alignflow/model/weights"
)

// Fixture file names inside the output directory.
const (
	SpecFile          = "spec.json"
	PolicyInitFile    = "policy_init.safetensors"
	RewardInitFile    = "reward_init.safetensors"
	RLPolicyFile      = "rl_policy.safetensors"
	SFTBatchesFile    = "sft_batches.json"
	RewardBatchesFile = "reward_batches.json"
	GenPromptsFile    = "gen_prompts.json"
	RLPromptsFile     = "rl_prompts.json"
	ChecksDir         = "checks"
)

// SpecJSON is spec.json: the sizes, the step counts and the file names.
type SpecJSON struct {
	Sizes
	Counts            Counts            `json:"counts"`
	RLCheckIterations int               `json:"rl_check_iterations"`
	Stages            []string          `json:"stages"`
	Files             map[string]string `json:"files"`
	// Notes describe conventions the reference must follow.
	Notes []string `json:"notes"`
}

type sftBatchJSON struct {
	Inputs  [][]int32   `json:"inputs"`
	Targets [][]int32   `json:"targets"`
	Mask    [][]float32 `json:"mask"`
	Rows    int         `json:"rows"`
}

type pairBatchJSON struct {
	Chosen       [][]int32 `json:"chosen"`
	ChosenLast   []int32   `json:"chosen_last"`
	Rejected     [][]int32 `json:"rejected"`
	RejectedLast []int32   `json:"rejected_last"`
	Margin       []float32 `json:"margin"`
	Weight       []float32 `json:"weight"`
	Valid        []float32 `json:"valid"`
}

// Write stores the fixtures in dir (created if needed).
func (f *Fixtures) Write(dir string, stages []string) error {
	if err := os.MkdirAll(filepath.Join(dir, ChecksDir), 0o755); err != nil {
		return err
	}
	for name, set := range map[string]*weights.Set{PolicyInitFile: f.Policy, RewardInitFile: f.Reward, RLPolicyFile: f.RLPolicy} {
		if err := writeWeights(filepath.Join(dir, name), set); err != nil {
			return err
		}
	}
	var sft []sftBatchJSON
	for _, b := range f.SFTBatches {
		sft = append(sft, sftBatchJSON{Inputs: b.Inputs, Targets: b.Targets, Mask: b.Mask, Rows: b.Rows})
	}
	var pairs []pairBatchJSON
	for _, b := range f.PairBatches {
		pairs = append(pairs, pairBatchJSON{Chosen: b.Chosen, ChosenLast: b.ChosenLast, Rejected: b.Rejected,
			RejectedLast: b.RejectedLast, Margin: b.Margin, Weight: b.Weight, Valid: b.Valid})
	}
	gen := map[string][][]int32{}
	for bs, p := range f.GenPrompts {
		gen[strconv.Itoa(bs)] = p
	}
	spec := SpecJSON{
		Sizes: f.Sizes, Counts: f.Counts, RLCheckIterations: RLCheckIterations, Stages: stages,
		Files: map[string]string{
			"policy_init": PolicyInitFile, "reward_init": RewardInitFile, "rl_policy": RLPolicyFile,
			"sft_batches": SFTBatchesFile, "reward_batches": RewardBatchesFile,
			"gen_prompts": GenPromptsFile, "rl_prompts": RLPromptsFile, "checks": ChecksDir,
		},
		Notes: []string{
			"weights: float32 safetensors with alignflow's parameter names; linear weights are [in, out] (y = x @ W)",
			"sft_batches/reward_batches: one batch per step, warmup steps first; padding token id is tokens.pad",
			"rl_prompts: the first rl_check_iterations entries are the check iterations (checks/reinforce_iteration.json), then warmup, then timed",
			"checks/reinforce_objectives.json: objective variants (advantage estimator, loss aggregation, KL placement, clipped epochs, minibatches), each rl_check_iterations iterations on the check iterations' prompts from rl_policy with a fresh optimizer state; settings under the run spec's reinforce.* names",
			"generation prefills the left-padded prompts in one pass (padding masked, positions from each row's first real token), then decodes one token per step; it stops when every row is done",
		},
	}
	if err := WriteJSON(filepath.Join(dir, SpecFile), spec); err != nil {
		return err
	}
	for name, v := range map[string]any{SFTBatchesFile: sft, RewardBatchesFile: pairs, GenPromptsFile: gen, RLPromptsFile: f.RLPrompts} {
		if err := writeCompact(filepath.Join(dir, name), v); err != nil {
			return err
		}
	}
	return nil
}

// WriteCheck stores a stage's check data as checks/<stage>.json and its
// further checks as checks/<name>.json.
func WriteCheck(dir string, st *Stage) error {
	if st.Check != nil {
		if err := writeCompact(filepath.Join(dir, ChecksDir, st.Name+".json"), st.Check); err != nil {
			return err
		}
	}
	for name, c := range st.Checks {
		if err := writeCompact(filepath.Join(dir, ChecksDir, name+".json"), c); err != nil {
			return err
		}
	}
	return nil
}

func writeCompact(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func writeWeights(path string, s *weights.Set) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := s.WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

// WriteJSON writes v as indented JSON.
func WriteJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", " ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
