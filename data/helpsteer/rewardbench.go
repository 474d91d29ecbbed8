package helpsteer

import "strings"

// RewardBenchPair is one row of RewardBench's "filtered" split: a prompt with
// a chosen and a rejected response. A reward model gets it right when it
// scores chosen above rejected.
type RewardBenchPair struct {
	Prompt        string `json:"prompt"`
	Chosen        string `json:"chosen"`
	ChosenModel   string `json:"chosen_model"`
	Rejected      string `json:"rejected"`
	RejectedModel string `json:"rejected_model"`
	Subset        string `json:"subset"`
	ID            int    `json:"id"`
}

var rewardBenchSchema = []schemaField{
	{name: "prompt", kind: kindString, required: true},
	{name: "chosen", kind: kindString, required: true},
	{name: "chosen_model", kind: kindString, nullable: true},
	{name: "rejected", kind: kindString, required: true},
	{name: "rejected_model", kind: kindString, nullable: true},
	{name: "subset", kind: kindString, required: true},
	{name: "id", kind: kindInt},
}

// Validate reports the first value the strict loader rejects.
func (p RewardBenchPair) Validate() error {
	for _, f := range []struct{ name, v string }{{"prompt", p.Prompt}, {"chosen", p.Chosen}, {"rejected", p.Rejected}, {"subset", p.Subset}} {
		if strings.TrimSpace(f.v) == "" {
			return fieldErr(f.name, "is empty")
		}
	}
	return nil
}

// ReadRewardBench loads RewardBench-format pairs from JSONL, plain or gzip,
// as strictly as ReadPreferences.
func ReadRewardBench(path string) ([]RewardBenchPair, error) {
	rows, _, err := LoadRewardBench(path, ReadOptions{})
	return rows, err
}

// LoadRewardBench is ReadRewardBench with options, like LoadRatings.
func LoadRewardBench(path string, opts ReadOptions) ([]RewardBenchPair, ReadReport, error) {
	return readJSONL(path, rewardBenchSchema, func(p *RewardBenchPair) error { return p.Validate() }, opts)
}
