package matched

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"

	"github.com/alignflow/alignflow/data/helpsteer"
)

// Defaults applied by Generate to zero-valued Options fields.
const (
	DefaultPrompts         = 600
	DefaultRatingNoise     = 0.6
	DefaultPreferenceNoise = 0.5
)

// styleMixture is the probability of each Style for a generated response:
// a mostly-correct but often padded or wrong SFT distribution that leaves a
// trained policy clear room to improve over imitation.
var styleMixture = [numStyles]float64{0.35, 0.30, 0.15, 0.10, 0.10}

// Options configures Generate. Zero values mean the documented defaults, so
// Options{Seed: s} is a complete configuration.
type Options struct {
	// Seed determines everything: split, prompts, responses and noise.
	Seed int64
	// Prompts is the number of prompt instances (each yields two ratings
	// rows and one preference row); default 600.
	Prompts int
	// ValidationFraction is the share of the 64 (key, template)
	// combinations held out for validation; default 0.2, capped at 0.75 so
	// every key keeps a training template.
	ValidationFraction float64
	// RatingNoise is the std of annotator noise added to gold attributes
	// before rounding; default 0.6, negative for none.
	RatingNoise float64
	// PreferenceNoise is the std of noise added to the gold helpfulness
	// difference before bucketing into a strength; default 0.5, negative
	// for none.
	PreferenceNoise float64
}

func (o Options) withDefaults() Options {
	if o.Prompts <= 0 {
		o.Prompts = DefaultPrompts
	}
	if o.ValidationFraction <= 0 {
		o.ValidationFraction = DefaultValidationFraction
	}
	o.ValidationFraction = min(o.ValidationFraction, maxValidationFraction)
	o.RatingNoise = noiseDefault(o.RatingNoise, DefaultRatingNoise)
	o.PreferenceNoise = noiseDefault(o.PreferenceNoise, DefaultPreferenceNoise)
	return o
}

func noiseDefault(v, def float64) float64 {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0
	}
	return v
}

// Dataset is the generated matched data: Ratings holds two consecutive rows
// per prompt instance (response 1, then response 2, as in HelpSteer2), and
// Preferences one row per instance over the same two responses.
type Dataset struct {
	Ratings     []helpsteer.Rating
	Preferences []helpsteer.Preference
}

// Generate builds the dataset and its gold Task deterministically from
// opts.Seed: the same options always give identical rows.
func Generate(opts Options) (*Dataset, *Task) {
	opts = opts.withDefaults()
	task := newTask(opts.Seed, opts.ValidationFraction)
	g := &generator{
		rng:  rand.New(rand.NewPCG(uint64(opts.Seed), 0x6d6174636865642e)),
		task: task,
		opts: opts,
	}

	// Exact split counts, proportional to the held-out combinations, in a
	// shuffled order.
	valShare := float64(len(task.val)) / float64(len(task.val)+len(task.train))
	nVal := int(math.Round(valShare * float64(opts.Prompts)))
	if len(task.val) == 0 {
		nVal = 0
	}
	splits := make([]string, opts.Prompts)
	for i := range splits {
		splits[i] = helpsteer.SplitTrain
		if i < nVal {
			splits[i] = helpsteer.SplitValidation
		}
	}
	g.rng.Shuffle(len(splits), func(i, j int) { splits[i], splits[j] = splits[j], splits[i] })

	ds := &Dataset{
		Ratings:     make([]helpsteer.Rating, 0, 2*opts.Prompts),
		Preferences: make([]helpsteer.Preference, 0, opts.Prompts),
	}
	for _, split := range splits {
		pool := task.train
		if split == helpsteer.SplitValidation {
			pool = task.val
		}
		prompt := pool[g.rng.IntN(len(pool))]
		r1, r2 := g.responsePair(prompt)
		g1, g2 := task.Gold(prompt, r1), task.Gold(prompt, r2)
		ds.Ratings = append(ds.Ratings, g.rating(split, prompt, r1, g1), g.rating(split, prompt, r2, g2))
		ds.Preferences = append(ds.Preferences, g.preference(split, prompt, r1, r2, g1, g2))
	}
	return ds, task
}

// WriteDataset writes ds to dir (created if needed) as ratings.jsonl.gz and
// preferences.jsonl.gz through helpsteer's atomic writers, the file names
// the training pipeline looks for.
func WriteDataset(dir string, ds *Dataset) (ratingsPath, preferencesPath string, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", fmt.Errorf("write dataset %s: %w", dir, err)
	}
	ratingsPath = filepath.Join(dir, "ratings.jsonl.gz")
	preferencesPath = filepath.Join(dir, "preferences.jsonl.gz")
	if err := helpsteer.WriteRatings(ratingsPath, ds.Ratings); err != nil {
		return "", "", fmt.Errorf("write dataset %s: %w", dir, err)
	}
	if err := helpsteer.WritePreferences(preferencesPath, ds.Preferences); err != nil {
		return "", "", fmt.Errorf("write dataset %s: %w", dir, err)
	}
	return ratingsPath, preferencesPath, nil
}

type generator struct {
	rng  *rand.Rand
	task *Task
	opts Options
}

func (g *generator) style() Style {
	u := g.rng.Float64()
	for s, p := range styleMixture {
		if u < p {
			return Style(s)
		}
		u -= p
	}
	return Garbled
}

// sameStyleWeight scales the chance that both responses of a pair share a
// style, relative to independent draws. Concise-correct pairs would be
// identical text, so they never pair with themselves.
var sameStyleWeight = [numStyles]float64{0, 0.25, 0.25, 0.25, 0.25}

// pairCDF is the cumulative distribution of (style1, style2) over the 25
// style pairs. It is symmetric, both marginals equal styleMixture, and its
// diagonal is small, so most pairs contrast two styles while the responses
// as a whole still follow the mixture (which an SFT policy then imitates).
var pairCDF = func() [numStyles * numStyles]float64 {
	const n = int(numStyles)
	var k [n][n]float64
	for a := range n {
		for b := range n {
			k[a][b] = styleMixture[a] * styleMixture[b]
			if a == b {
				k[a][b] *= sameStyleWeight[a]
			}
		}
	}
	// Symmetric Sinkhorn scaling: find u with sum_b u_a k_ab u_b = p_a.
	u := [n]float64{1, 1, 1, 1, 1}
	for range 500 {
		for a := range n {
			var ku float64
			for b := range n {
				ku += k[a][b] * u[b]
			}
			u[a] = math.Sqrt(u[a] * styleMixture[a] / ku)
		}
	}
	var cdf [n * n]float64
	var acc float64
	for a := range n {
		for b := range n {
			acc += u[a] * k[a][b] * u[b]
			cdf[a*n+b] = acc
		}
	}
	for i := range cdf {
		cdf[i] /= acc
	}
	return cdf
}()

func (g *generator) stylePair() (Style, Style) {
	u := g.rng.Float64()
	i, _ := slices.BinarySearch(pairCDF[:], u)
	i = min(i, len(pairCDF)-1)
	return Style(i / int(numStyles)), Style(i % int(numStyles))
}

// responsePair draws a style pair from pairCDF and a response for each,
// redrawing the second response's text (same style, so the mixture is kept)
// in the rare case it equals the first.
func (g *generator) responsePair(prompt string) (string, string) {
	answer, _ := g.task.Answer(prompt)
	key := antonym[answer]
	s1, s2 := g.stylePair()
	r1 := g.response(s1, key, answer)
	r2 := g.response(s2, key, answer)
	for r2 == r1 {
		r2 = g.response(s2, key, answer)
	}
	return r1, r2
}

func (g *generator) response(s Style, key, answer string) string {
	switch s {
	case ConciseCorrect:
		return answer
	case PaddedCorrect:
		return g.pad(answer)
	case ConciseWrong:
		return g.wrongWord(key, answer)
	case PaddedWrong:
		return g.pad(g.wrongWord(key, answer))
	default:
		w := g.garble()
		if g.rng.IntN(2) == 0 {
			w = g.pad(w)
		}
		return w
	}
}

func (g *generator) pad(w string) string {
	for {
		p := padPrefixes[g.rng.IntN(len(padPrefixes))]
		s := padSuffixes[g.rng.IntN(len(padSuffixes))]
		if p != "" || s != "" {
			return p + w + s
		}
	}
}

// wrongWord is the prompt's own word half the time (the commonest confusion)
// and otherwise another vocabulary word that is neither key nor answer.
func (g *generator) wrongWord(key, answer string) string {
	if g.rng.IntN(2) == 0 {
		return key
	}
	for {
		w := keys[g.rng.IntN(len(keys))]
		if w != key && w != answer {
			return w
		}
	}
}

// garble returns 3..8 random lowercase letters that are not a known word, so
// a garbled response never contains a vocabulary word by accident.
func (g *generator) garble() string {
	for {
		b := make([]byte, 3+g.rng.IntN(6))
		for i := range b {
			b[i] = byte('a' + g.rng.IntN(26))
		}
		if w := string(b); !knownWords[w] {
			return w
		}
	}
}

func (g *generator) rating(split, prompt, response string, gold GoldScore) helpsteer.Rating {
	var v [5]int
	for i, a := range gold.Attributes {
		v[i] = clamp(int(math.Round(a+g.rng.NormFloat64()*g.opts.RatingNoise)), helpsteer.MinAttribute, helpsteer.MaxAttribute)
	}
	return helpsteer.Rating{
		Prompt: prompt, Response: response,
		Helpfulness: v[0], Correctness: v[1], Coherence: v[2], Complexity: v[3], Verbosity: v[4],
		Split: split,
	}
}

// strengthOf buckets a helpfulness difference (response 2 minus response 1)
// into a HelpSteer2-Preference strength: |d| < 0.25 is a tie, then 1, 2, 3
// at thresholds 1 and 2; negative prefers response 1.
func strengthOf(d float64) int {
	a := math.Abs(d)
	var m int
	switch {
	case a < 0.25:
		return 0
	case a < 1:
		m = 1
	case a < 2:
		m = 2
	default:
		m = 3
	}
	if d < 0 {
		return -m
	}
	return m
}

func (g *generator) preference(split, prompt, r1, r2 string, g1, g2 GoldScore) helpsteer.Preference {
	d := g2.Helpfulness - g1.Helpfulness + g.rng.NormFloat64()*g.opts.PreferenceNoise
	strength := strengthOf(d)
	statement, elaboration := explain(strength, g1, g2)
	p := helpsteer.Preference{
		Split: split, Prompt: prompt, Response1: r1, Response2: r2,
		PreferenceStrength:    strength,
		PreferenceStatement:   statement,
		PreferenceElaboration: elaboration,
	}

	// Three annotators close to the aggregate, then 0..2 further raw
	// judgements that may disagree more, one of which sometimes could not
	// judge at all.
	jitter := func(spread int) int {
		return clamp(strength+g.rng.IntN(2*spread+1)-spread, helpsteer.MinStrength, helpsteer.MaxStrength)
	}
	for range 3 {
		s := jitter(1)
		st, el := explain(s, g1, g2)
		p.ThreeMostSimilarPreferences = append(p.ThreeMostSimilarPreferences,
			helpsteer.AnnotatorPreference{Statement: st, Elaboration: el, Strength: s})
		p.AllPreferencesUnprocessed = append(p.AllPreferencesUnprocessed,
			helpsteer.AnnotatorJudgement{Justification: st + " " + el, Strength: s})
	}
	extra := g.rng.IntN(3)
	cannotJudge := extra > 0 && g.rng.Float64() < 0.25
	for i := range extra {
		if cannotJudge && i == extra-1 {
			p.AllPreferencesUnprocessed = append(p.AllPreferencesUnprocessed, helpsteer.AnnotatorJudgement{
				Justification: "I cannot judge which is better: I am not sure what the opposite of this word is.",
				Strength:      helpsteer.CannotJudge,
			})
			continue
		}
		s := jitter(2)
		st, el := explain(s, g1, g2)
		p.AllPreferencesUnprocessed = append(p.AllPreferencesUnprocessed,
			helpsteer.AnnotatorJudgement{Justification: st + " " + el, Strength: s})
	}
	all := p.AllPreferencesUnprocessed
	g.rng.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
	return p
}

var degree = [4]string{"", "slightly better than", "better than", "much better than"}

// explain writes an annotator-style statement and elaboration for strength,
// citing the gold reason when it supports that direction.
func explain(strength int, g1, g2 GoldScore) (statement, elaboration string) {
	if strength == 0 {
		statement = "@Response 1 and @Response 2 are about equally helpful."
		switch {
		case g1.Correct && g2.Correct:
			elaboration = "Both give the right opposite; the extra words in one of them hardly matter."
		case !g1.Correct && !g2.Correct:
			elaboration = "Neither gives the right opposite, so neither is useful."
		default:
			elaboration = "One is right but padded and the other is short but wrong, so it is hard to choose."
		}
		return statement, elaboration
	}
	better, worse := 2, 1
	gb, gw := g2, g1
	m := strength
	if strength < 0 {
		better, worse = 1, 2
		gb, gw = g1, g2
		m = -strength
	}
	statement = fmt.Sprintf("@Response %d is %s @Response %d.", better, degree[m], worse)
	switch {
	case gb.Correct && !gw.Correct && gw.Attributes[2] < 4:
		elaboration = fmt.Sprintf("@Response %d gives the right opposite, while @Response %d is not even a real answer.", better, worse)
	case gb.Correct && !gw.Correct:
		elaboration = fmt.Sprintf("@Response %d gives the right opposite, while @Response %d gives the wrong word.", better, worse)
	case gb.Correct && gw.Correct && gb.Extra == 0 && gw.Extra > 0:
		elaboration = fmt.Sprintf("@Response %d gives the right word without padding, while @Response %d wraps it in filler.", better, worse)
	case gb.Correct && gw.Correct && gb.Extra < gw.Extra:
		elaboration = fmt.Sprintf("Both are right, but @Response %d uses less filler than @Response %d.", better, worse)
	case !gb.Correct && !gw.Correct && gb.Extra < gw.Extra:
		elaboration = fmt.Sprintf("Both are wrong, but @Response %d is at least short.", better)
	default:
		elaboration = fmt.Sprintf("@Response %d reads a little better to me, although the difference is small.", better)
	}
	return statement, elaboration
}

func clamp(v, lo, hi int) int { return min(max(v, lo), hi) }
