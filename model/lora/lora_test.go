package lora_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/model/backend"
	"github.com/alignflow/alignflow/model/lora"
	"github.com/alignflow/alignflow/model/optim"
	"github.com/alignflow/alignflow/model/tokenizer"
	"github.com/alignflow/alignflow/model/transformer"
	"github.com/alignflow/alignflow/model/weights"
	"github.com/alignflow/alignflow/policy"
)

var (
	bundledCfg = transformer.Config{Vocab: tokenizer.VocabSize, Dim: 32, Heads: 4, Layers: 2, Hidden: 48, MaxLen: 24}
	gatedCfg   = transformer.Config{Vocab: tokenizer.VocabSize, Dim: 32, Heads: 4, KVHeads: 2, Layers: 2, Hidden: 48, MaxLen: 24, GatedMLP: true}
)

func TestResolveNamesTheModelsModules(t *testing.T) {
	got, err := lora.Resolve(gatedCfg, []string{"down_proj", "q_proj"})
	require.NoError(t, err)
	assert.Equal(t, []string{"q_proj", "down_proj"}, got, "Modules' order")
	all, err := lora.Resolve(bundledCfg, nil)
	require.NoError(t, err)
	assert.Equal(t, []string{"q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"}, all)
	_, err = lora.Resolve(bundledCfg, []string{"q_proj", "gate_proj"})
	assert.EqualError(t, err, `targets[1]: "gate_proj" is not a module of this model (its modules: q_proj, k_proj, v_proj, o_proj, up_proj, down_proj)`)
	_, err = lora.Resolve(gatedCfg, []string{"q_proj", "q_proj"})
	assert.ErrorContains(t, err, `targets[1]: "q_proj" is listed twice`)
}

// TestInitIsPEFTs checks the shapes and PEFT's default initialisation:
// A uniform within 1/sqrt(in) (kaiming_uniform_ with a = sqrt(5): gain
// sqrt(2/(1+5)), bound gain*sqrt(3/fan_in) = 1/sqrt(fan_in)), B zero.
func TestInitIsPEFTs(t *testing.T) {
	c := lora.Config{Rank: 4, Alpha: 8, Targets: []string{"k_proj", "gate_proj", "down_proj"}}
	a, err := lora.Init(gatedCfg, c, 3)
	require.NoError(t, err)
	assert.Equal(t, 2*3*2, a.Len())
	kv := gatedCfg.KVHeadCount() * gatedCfg.HeadDim()
	assert.Equal(t, []int{32, 4}, a.Get("layer1.wk.lora_a").Shape)
	assert.Equal(t, []int{4, kv}, a.Get("layer1.wk.lora_b").Shape)
	assert.Equal(t, []int{48, 4}, a.Get("layer0.w2.lora_a").Shape)
	assert.Equal(t, []int{4, 32}, a.Get("layer0.w2.lora_b").Shape)
	bound := float32(1 / math.Sqrt(48))
	var maxAbs float32
	for _, v := range a.Get("layer0.w2.lora_a").Data {
		maxAbs = max(maxAbs, float32(math.Abs(float64(v))))
	}
	assert.LessOrEqual(t, maxAbs, bound)
	assert.Greater(t, maxAbs, bound*0.8, "uniform over the whole range")
	for _, v := range a.Get("layer0.w2.lora_b").Data {
		require.Zero(t, v)
	}
	got, ok, err := lora.Of(a)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, c, got)
	assert.Equal(t, 2.0, got.Scale())
	again, _ := lora.Init(gatedCfg, c, 3)
	assert.Equal(t, a.Digest(), again.Digest(), "seeded")
}

// randomB gives an adapter's B matrices values, as training would.
func randomB(a *weights.Set, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 1))
	for _, n := range a.Names() {
		if t := a.Get(n); len(n) > 7 && n[len(n)-7:] == ".lora_b" {
			for i := range t.Data {
				t.Data[i] = float32(r.NormFloat64() * 0.1)
			}
		}
	}
}

func TestMergeAddsTheScaledProduct(t *testing.T) {
	base := weights.NewSet()
	base.Put("layer0.wq", &weights.Tensor{Shape: []int{2, 3}, Data: []float32{1, 2, 3, 4, 5, 6}})
	base.Put("embed", &weights.Tensor{Shape: []int{1}, Data: []float32{7}})
	ad := weights.NewSet()
	ad.Metadata[lora.MetaKey] = `{"r":1,"lora_alpha":2,"target_modules":["q_proj"]}`
	ad.Put("layer0.wq.lora_a", &weights.Tensor{Shape: []int{2, 1}, Data: []float32{1, -1}})
	ad.Put("layer0.wq.lora_b", &weights.Tensor{Shape: []int{1, 3}, Data: []float32{0.5, 1, 2}})
	ad.Put("reward_head.w", &weights.Tensor{Shape: []int{1}, Data: []float32{9}})
	m, err := lora.Merge(base, ad)
	require.NoError(t, err)
	// scale 2: W + 2 * [1;-1][0.5 1 2] = [1+1 2+2 3+4; 4-1 5-2 6-4]
	assert.Equal(t, []float32{2, 4, 7, 3, 3, 2}, m.Get("layer0.wq").Data)
	assert.Equal(t, []float32{7}, m.Get("embed").Data)
	assert.Equal(t, []float32{9}, m.Get("reward_head.w").Data, "modules trained in full come from the adapter")
	assert.Equal(t, []float32{1, 2, 3, 4, 5, 6}, base.Get("layer0.wq").Data, "the base is not changed")
	_, isAdapter, _ := lora.Of(m)
	assert.False(t, isAdapter)
}

// TestAdapterInTheGraph checks the graph's adapter against Merge: a fresh
// adapter leaves the model's log-probabilities bit for bit as the base's,
// a trained one gives the merged model's up to float32 rounding.
func TestAdapterInTheGraph(t *testing.T) {
	b, err := backend.New(backend.Go)
	require.NoError(t, err)
	for _, cfg := range []transformer.Config{bundledCfg, gatedCfg} {
		base := policy.Init(cfg, 5)
		c := lora.Config{Rank: 4, Alpha: 16}
		ad, err := lora.Init(cfg, c, 6)
		require.NoError(t, err)
		both, _ := lora.Trainable(base, ad, base.Names())
		gcfg := cfg
		gcfg.LoRAScale = c.Scale()
		adapted, plain := policy.NewEngine(b, gcfg, both), policy.NewEngine(b, cfg, base)
		batch, err := policy.MakeBatch(cfg, 2, [][]int32{tokenizer.EncodePrompt("hot?"), tokenizer.EncodePrompt("up")}, [][]int32{{'c', 'o', 'l', 'd', tokenizer.EOS}, {'d', 'o', 'w', 'n'}})
		require.NoError(t, err)
		want, err := plain.LogProbs(base, batch)
		require.NoError(t, err)
		got, err := adapted.LogProbs(both, batch)
		require.NoError(t, err)
		assert.Equal(t, want, got, "a fresh adapter changes nothing")

		randomB(ad, 9)
		both, _ = lora.Trainable(base, ad, base.Names())
		merged, err := lora.Merge(base, ad)
		require.NoError(t, err)
		want, err = plain.LogProbs(merged, batch)
		require.NoError(t, err)
		got, err = adapted.LogProbs(both, batch)
		require.NoError(t, err)
		with, err := plain.LogProbs(lora.With(base, ad), batch) // the engine finds the adapter itself
		require.NoError(t, err)
		assert.Equal(t, got, with)
		base0, err := plain.LogProbs(base, batch)
		require.NoError(t, err)
		moved := 0.0
		for i := range want {
			for j := range want[i] {
				require.InDelta(t, want[i][j], got[i][j], 2e-4, "row %d position %d", i, j)
				moved = max(moved, math.Abs(float64(base0[i][j]-got[i][j])))
			}
		}
		assert.Greater(t, moved, 0.01, "the adapter changes the model")

		// Generation through the KV cache reads the adapter too: the
		// unmerged policy samples what the merged one does, with the
		// log-probabilities the full forward gives.
		prompts := [][]int32{tokenizer.EncodePrompt("hot?"), tokenizer.EncodePrompt("a")}
		opts := policy.SampleOptions{Temperature: 1, TopP: 1, MaxTokens: 8}
		fromMerged, err := plain.Generate(merged, prompts, 2, opts, rand.New(rand.NewPCG(3, 3)))
		require.NoError(t, err)
		fromAdapter, err := plain.Generate(lora.With(base, ad), prompts, 2, opts, rand.New(rand.NewPCG(3, 3)))
		require.NoError(t, err)
		for i := range fromMerged {
			assert.Equal(t, fromMerged[i].Tokens, fromAdapter[i].Tokens, "prompt %d", i)
			for k := range fromMerged[i].LogProbs {
				assert.InDelta(t, fromMerged[i].LogProbs[k], fromAdapter[i].LogProbs[k], 2e-4)
			}
		}
	}
}

// TestTrainingAnAdapterLeavesTheBase trains an adapter with SFT's loss over
// a frozen base: the loss falls, the base is untouched and the optimizer
// holds moments of the adapter only.
func TestTrainingAnAdapterLeavesTheBase(t *testing.T) {
	b, err := backend.New(backend.Go)
	require.NoError(t, err)
	base := policy.Init(bundledCfg, 5)
	for i := range base.Get(policy.LMHead).Data { // a head that can express what the adapter learns
		base.Get(policy.LMHead).Data[i] *= 50
	}
	digest := base.Digest()
	c := lora.Config{Rank: 4, Alpha: 8}
	ad, err := lora.Init(bundledCfg, c, 6)
	require.NoError(t, err)
	gcfg := bundledCfg
	gcfg.LoRAScale = c.Scale()
	tr := optim.NewTrainer(b, ad.Names(), optim.DefaultAdamW, policy.SFTLoss(gcfg), base.Names()...).WithFrozen(base)
	st := optim.NewState(ad)
	sess, err := tr.Start(ad, st)
	require.NoError(t, err)
	batch, err := policy.MakeBatch(bundledCfg, 2, [][]int32{tokenizer.EncodePrompt("hot?"), tokenizer.EncodePrompt("up")}, [][]int32{{'c', 'o', 'l', 'd', tokenizer.EOS}, {'d', 'o', 'w', 'n', tokenizer.EOS}})
	require.NoError(t, err)
	var first, last float64
	for i := range 40 {
		r, err := sess.Step(0.05, batch)
		require.NoError(t, err)
		if i == 0 {
			first = r.Loss
		}
		last = r.Loss
	}
	require.NoError(t, sess.Close())
	assert.Less(t, last, first*0.8, "the adapter learns")
	assert.Equal(t, digest, base.Digest(), "the base is frozen")
	assert.Equal(t, ad.Names(), st.M.Names(), "moments of the adapter only")
	nonzero := 0
	for _, v := range ad.Get("layer1.w2.lora_b").Data {
		if v != 0 {
			nonzero++
		}
	}
	assert.Positive(t, nonzero, "B trained")

	_, err = optim.NewTrainer(b, ad.Names(), optim.DefaultAdamW, policy.SFTLoss(gcfg), base.Names()...).Start(ad, optim.NewState(ad))
	assert.ErrorContains(t, err, "frozen tensors and none were given")
}

// TestCombineIsBothMerges stacks an adapter trained over a merged one:
// merging the combination into the base gives the two merges in turn.
func TestCombineIsBothMerges(t *testing.T) {
	base := policy.Init(gatedCfg, 1)
	c := lora.Config{Rank: 2, Alpha: 4}
	first, _ := lora.Init(gatedCfg, c, 2)
	second, _ := lora.Init(gatedCfg, c, 3)
	randomB(first, 4)
	randomB(second, 5)
	m1, err := lora.Merge(base, first)
	require.NoError(t, err)
	want, err := lora.Merge(m1, second)
	require.NoError(t, err)
	both, err := lora.Combine(first, second)
	require.NoError(t, err)
	bc, _, err := lora.Of(both)
	require.NoError(t, err)
	assert.Equal(t, 4, bc.Rank)
	assert.Equal(t, c.Scale(), bc.Scale())
	got, err := lora.Merge(base, both)
	require.NoError(t, err)
	for _, n := range want.Names() {
		w, g := want.Get(n), got.Get(n)
		for i := range w.Data {
			require.InDelta(t, w.Data[i], g.Data[i], 1e-6, "%s[%d]", n, i)
		}
	}
	other, _ := lora.Init(gatedCfg, lora.Config{Rank: 2, Alpha: 8}, 3)
	_, err = lora.Combine(first, other)
	assert.ErrorContains(t, err, "scales alpha/r differ")
}

// TestTrainingWithDropout trains an adapter with PEFT's lora_dropout: the
// first step of a fresh adapter (B zero) has the undropped model's loss,
// since dropout reads only the adapter's input; the same seed gives the
// same adapter, bit for bit, and another seed another; it learns.
func TestTrainingWithDropout(t *testing.T) {
	b, err := backend.New(backend.Go)
	require.NoError(t, err)
	base := policy.Init(bundledCfg, 5)
	for i := range base.Get(policy.LMHead).Data {
		base.Get(policy.LMHead).Data[i] *= 50
	}
	c := lora.Config{Rank: 4, Alpha: 8, Dropout: 0.2}
	batch, err := policy.MakeBatch(bundledCfg, 2, [][]int32{tokenizer.EncodePrompt("hot?"), tokenizer.EncodePrompt("up")}, [][]int32{{'c', 'o', 'l', 'd', tokenizer.EOS}, {'d', 'o', 'w', 'n', tokenizer.EOS}})
	require.NoError(t, err)
	train := func(dropout float64, seed int64) (*weights.Set, []float64) {
		gcfg := bundledCfg
		gcfg.LoRAScale, gcfg.LoRADropout = c.Scale(), dropout
		loss := policy.SFTLoss(gcfg)
		if dropout > 0 {
			loss.RNG = transformer.DropoutRNG
		}
		ad, err := lora.Init(bundledCfg, c, 6)
		require.NoError(t, err)
		sess, err := optim.NewTrainer(b, ad.Names(), optim.DefaultAdamW, loss, base.Names()...).WithFrozen(base).WithSeed(seed).Start(ad, optim.NewState(ad))
		require.NoError(t, err)
		var losses []float64
		for range 40 {
			r, err := sess.Step(0.05, batch)
			require.NoError(t, err)
			losses = append(losses, r.Loss)
		}
		require.NoError(t, sess.Close())
		return ad, losses
	}
	plain, plainLosses := train(0, 0)
	dropped, losses := train(c.Dropout, 1)
	assert.Equal(t, plainLosses[0], losses[0], "a fresh adapter's first step: dropout reads only the adapter's input")
	assert.NotEqual(t, plainLosses[1], losses[1], "later steps see the dropped inputs")
	assert.Less(t, losses[len(losses)-1], losses[0]*0.8, "the adapter learns with dropout")
	again, _ := train(c.Dropout, 1)
	other, _ := train(c.Dropout, 2)
	assert.Equal(t, dropped.Digest(), again.Digest(), "the same seed: the same adapter")
	assert.NotEqual(t, dropped.Digest(), other.Digest(), "another seed: other masks")
	assert.NotEqual(t, plain.Digest(), dropped.Digest())

	_, err = optim.NewTrainer(b, plain.Names(), optim.DefaultAdamW, optim.Loss{Name: "x", RNG: transformer.DropoutRNG, Fn: policy.SFTLoss(bundledCfg).Fn}, base.Names()...).WithFrozen(base).Start(plain, optim.NewState(plain))
	assert.ErrorContains(t, err, "draws random numbers and the trainer has no seed")
}
