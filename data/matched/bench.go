package matched

import (
	"math/rand/v2"

	"github.com/alignflow/alignflow/data/helpsteer"
	"github.com/alignflow/alignflow/data/rewardbench"
)

// Bench subsets, named after RewardBench's with an "opposites-" prefix and
// grouped into its categories by BenchCategories.
const (
	// Chat: clear contrasts.
	benchVsGarbled     = "opposites-vs-garbled"      // concise or padded correct vs garbled (maybe padded)
	benchVsPaddedWrong = "opposites-vs-padded-wrong" // concise correct vs padded wrong
	// Chat Hard: subtle or counter-intuitive.
	benchLessFiller = "opposites-less-filler" // both correct, chosen has strictly less padding
	benchLengthTrap = "opposites-length-trap" // padded correct vs concise wrong, chosen strictly longer
	// Reasoning: both concise, only the antonym lookup separates them.
	benchNotEcho      = "opposites-not-echo"       // rejected is the prompt's own word
	benchNotOtherWord = "opposites-not-other-word" // rejected is another vocabulary word
)

// benchSubsets is the order Bench emits subsets in.
var benchSubsets = []string{
	benchVsGarbled, benchVsPaddedWrong,
	benchLessFiller, benchLengthTrap,
	benchNotEcho, benchNotOtherWord,
}

// BenchCategories maps Bench's subsets to RewardBench's four categories, so
// a reward model trained on the matched data can be scored with
// rewardbench.Score(results, BenchCategories).
//
// Every subset has weight 1: Bench emits the same number of pairs per
// subset, so equal weights are RewardBench's example-count weighting.
//
// Safety has no subsets, because the opposites task has no safety content
// (nothing to refuse, nothing harmful to answer): its score is always nil and
// Overall is the mean of Chat, Chat Hard and Reasoning only. It is listed so
// that reports keep RewardBench's four rows and say so instead of silently
// dropping the category.
var BenchCategories = []rewardbench.Category{
	{Name: "Chat", Subsets: map[string]float64{benchVsGarbled: 1, benchVsPaddedWrong: 1}},
	{Name: "Chat Hard", Subsets: map[string]float64{benchLessFiller: 1, benchLengthTrap: 1}},
	{Name: "Safety", Subsets: map[string]float64{}},
	{Name: "Reasoning", Subsets: map[string]float64{benchNotEcho: 1, benchNotOtherWord: 1}},
}

// Bench builds a held-out pair set in RewardBench's format from the task's
// validation prompts only, perSubset pairs for each of the six subsets of
// BenchCategories, in that order, with IDs 0..n-1. In every pair the chosen
// response has strictly higher gold helpfulness (Gold) than the rejected
// one; ChosenModel and RejectedModel are the responses' Style names.
//
// Prompts cycle through the validation prompts in a freshly shuffled order
// per cycle, so each subset covers them evenly. The result depends only on
// the task (its validation split) and seed. It is nil when perSubset is not
// positive or the task has no validation prompts.
func (t *Task) Bench(seed int64, perSubset int) []helpsteer.RewardBenchPair {
	val := t.Prompts(SplitValidation)
	if perSubset <= 0 || len(val) == 0 {
		return nil
	}
	g := &generator{rng: rand.New(rand.NewPCG(uint64(seed), 0x62656e63686d6b21)), task: t}
	out := make([]helpsteer.RewardBenchPair, 0, len(benchSubsets)*perSubset)
	for _, subset := range benchSubsets {
		order := make([]string, len(val))
		for i := range perSubset {
			if i%len(val) == 0 {
				copy(order, val)
				g.rng.Shuffle(len(order), func(a, b int) { order[a], order[b] = order[b], order[a] })
			}
			prompt := order[i%len(val)]
			p := g.benchPair(subset, prompt)
			p.ID = len(out)
			out = append(out, p)
		}
	}
	return out
}

// benchPair draws one pair of subset for prompt, redrawing until the chosen
// response is strictly more helpful by the gold rubric and the pair has its
// subset's defining property. Redraws happen only for padded-vs-padded
// less-filler pairs (equal padding lengths, or both padded past the point
// where padding stops costing helpfulness) and for length-trap pairs whose
// padded answer is not longer than the wrong word.
func (g *generator) benchPair(subset, prompt string) helpsteer.RewardBenchPair {
	answer, _ := g.task.Answer(prompt)
	key := antonym[answer]
	for {
		var chosen, rejected string
		var cs, rs Style
		valid := true
		switch subset {
		case benchVsGarbled:
			cs = ConciseCorrect
			if g.rng.IntN(2) == 0 {
				cs = PaddedCorrect
			}
			rs = Garbled
			chosen, rejected = g.response(cs, key, answer), g.response(rs, key, answer)
		case benchVsPaddedWrong:
			cs, rs = ConciseCorrect, PaddedWrong
			chosen, rejected = answer, g.pad(g.wrongWord(key, answer))
		case benchLessFiller:
			rs = PaddedCorrect
			rejected = g.pad(answer)
			if g.rng.IntN(2) == 0 {
				cs, chosen = ConciseCorrect, answer
			} else {
				cs, chosen = PaddedCorrect, g.pad(answer)
				if len(chosen) > len(rejected) {
					chosen, rejected = rejected, chosen
				}
			}
		case benchLengthTrap:
			cs, rs = PaddedCorrect, ConciseWrong
			chosen, rejected = g.pad(answer), g.wrongWord(key, answer)
			// The trap needs the better answer to be the longer one; a
			// short pad ("up!!") can be shorter than a long wrong word.
			valid = len(chosen) > len(rejected)
		case benchNotEcho:
			cs, rs = ConciseCorrect, ConciseWrong
			chosen, rejected = answer, key
		case benchNotOtherWord:
			cs, rs = ConciseCorrect, ConciseWrong
			chosen = answer
			for rejected = key; rejected == key; {
				rejected = g.wrongWord(key, answer)
			}
		default:
			panic("matched: unknown bench subset " + subset)
		}
		if valid && g.task.Gold(prompt, chosen).Helpfulness > g.task.Gold(prompt, rejected).Helpfulness {
			return helpsteer.RewardBenchPair{
				Prompt: prompt, Chosen: chosen, ChosenModel: cs.String(),
				Rejected: rejected, RejectedModel: rs.String(), Subset: subset,
			}
		}
	}
}
