package reward

import (
	"fmt"
	"strings"
)

// Recipe is one way of training a reward model from the paper's comparison:
// Bradley-Terry variants from the SFT backbone, regression on ratings, BT
// initialised from helpfulness-only regression (head included), and ExPO
// extrapolation from the regression model (weak) to the scaled-BT one (strong).
type Recipe struct {
	Name string
	// Regression trains on ratings first; HelpfulnessOnly limits it to the
	// helpfulness output.
	Regression, HelpfulnessOnly bool
	// BT is the Bradley-Terry loss trained next ("" for none).
	BT Loss
	// ExPO extrapolates from the regression model past the BT model, with
	// alpha chosen on validation pairs.
	ExPO bool
}

// Recipes are the recipes by the names configs and reports use.
var Recipes = []Recipe{
	{Name: "bt", BT: LossBT},
	{Name: "bt-margin", BT: LossBTMargin},
	{Name: "bt-scaled", BT: LossBTScaled},
	{Name: "regression", Regression: true},
	{Name: "regression-helpfulness", Regression: true, HelpfulnessOnly: true},
	{Name: "bt-from-regression", Regression: true, HelpfulnessOnly: true, BT: LossBT},
	{Name: "bt-margin-from-regression", Regression: true, HelpfulnessOnly: true, BT: LossBTMargin},
	{Name: "bt-scaled-from-regression", Regression: true, HelpfulnessOnly: true, BT: LossBTScaled},
	{Name: "bt-scaled-from-regression-expo", Regression: true, HelpfulnessOnly: true, BT: LossBTScaled, ExPO: true},
}

// StartsFrom names the recipes whose models this one starts from: the
// *-from-regression recipes the helpfulness-regression model (head
// included); ExPO also the scaled-BT model trained from it, which it
// extrapolates to.
func (r Recipe) StartsFrom() (from, strong string) {
	if !r.Regression || !r.HelpfulnessOnly || r.BT == "" {
		return "", ""
	}
	from = "regression-helpfulness"
	if r.ExPO {
		strong = "bt-scaled-from-regression"
	}
	return from, strong
}

// Plan lists the recipes to train for the requested ones: those and what
// they start from, each once, in Recipes order, which puts every recipe
// after the ones it starts from. Unknown names are left out.
func Plan(requested []string) []Recipe {
	need := map[string]bool{}
	var add func(string)
	add = func(name string) {
		r, err := LookupRecipe(name)
		if err != nil || need[name] {
			return
		}
		need[name] = true
		from, strong := r.StartsFrom()
		add(from)
		add(strong)
	}
	for _, name := range requested {
		add(name)
	}
	var plan []Recipe
	for _, r := range Recipes {
		if need[r.Name] {
			plan = append(plan, r)
		}
	}
	return plan
}

// RegressionPhase names the recipe's regression phase, as its checkpoints
// and the metrics log do: "regression", or "regression-helpfulness".
func (r Recipe) RegressionPhase() string {
	if r.HelpfulnessOnly {
		return "regression-helpfulness"
	}
	return "regression"
}

// RecipeNames lists the valid recipe names.
func RecipeNames() []string {
	names := make([]string, len(Recipes))
	for i, r := range Recipes {
		names[i] = r.Name
	}
	return names
}

// LookupRecipe returns the named recipe, or an error listing the valid names.
func LookupRecipe(name string) (Recipe, error) {
	for _, r := range Recipes {
		if r.Name == name {
			return r, nil
		}
	}
	return Recipe{}, fmt.Errorf("unknown reward recipe %q (allowed: %s)", name, strings.Join(RecipeNames(), ", "))
}

// ExPOAlphas is the sweep ExPO chooses alpha from (the paper reports about 1.5).
var ExPOAlphas = []float64{1, 1.25, 1.5, 1.75, 2}
