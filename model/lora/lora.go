// Package lora holds low-rank adapters (LoRA, Hu et al. 2021) of the
// transformer's projections, as PEFT defines them: a projection W [in, out]
// computes x W + (alpha / rank) (x A) B with A [in, rank] and B [rank, out]
// trained and W frozen. An adapter is a weights.Set of its A and B matrices
// (named after the projection, transformer.LoRAA and LoRAB) and of the
// modules trained in full beside them (a reward model's head, PEFT's
// modules_to_save); its metadata records its Config, so an adapter
// artifact says what it is. transformer adds the adapter in the graph
// (Params.linear); Merge folds it into a copy of its base, the weights
// every engine that only reads a model computes with.
package lora

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/alignflow/alignflow/model/transformer"
	"github.com/alignflow/alignflow/model/weights"
)

// Config is an adapter's shape.
type Config struct {
	Rank  int     `json:"r"`
	Alpha float64 `json:"lora_alpha"`
	// Targets are the adapted projections, by their Hugging Face module
	// names (q_proj, ..., down_proj; see Modules), in Modules' order.
	Targets []string `json:"target_modules"`
	// Dropout is the adapters' input dropout in training (PEFT's
	// lora_dropout; transformer.Config.LoRADropout).
	Dropout float64 `json:"lora_dropout,omitempty"`
}

// Scale is the factor of the adapter's product, PEFT's scaling
// lora_alpha / r (peft/tuners/lora/layer.py, update_layer, without rsLoRA).
func (c Config) Scale() float64 { return c.Alpha / float64(c.Rank) }

// Module is one kind of projection a layer has: its Hugging Face module
// name (q_proj) and its part in alignflow's names (wq).
type Module struct{ Name, Part string }

// Modules are the projections every layer of a model with cfg's
// architecture has, in the order Hugging Face's Llama lists them. The
// bundled model's MLP is down(silu(up(x))): its up_proj is w1.
func Modules(cfg transformer.Config) []Module {
	m := []Module{{"q_proj", "wq"}, {"k_proj", "wk"}, {"v_proj", "wv"}, {"o_proj", "wo"}}
	if cfg.GatedMLP {
		return append(m, Module{"gate_proj", "w1"}, Module{"up_proj", "w3"}, Module{"down_proj", "w2"})
	}
	return append(m, Module{"up_proj", "w1"}, Module{"down_proj", "w2"})
}

// ModuleNames lists Modules' names.
func ModuleNames(cfg transformer.Config) []string {
	var names []string
	for _, m := range Modules(cfg) {
		names = append(names, m.Name)
	}
	return names
}

// Resolve checks targets against the model's modules and returns them in
// Modules' order, every module when targets is empty. An unknown or
// repeated name is an error naming the model's modules.
func Resolve(cfg transformer.Config, targets []string) ([]string, error) {
	names := ModuleNames(cfg)
	if len(targets) == 0 {
		return names, nil
	}
	for i, t := range targets {
		if !slices.Contains(names, t) {
			return nil, fmt.Errorf("targets[%d]: %q is not a module of this model (its modules: %s)", i, t, strings.Join(names, ", "))
		}
		if slices.Contains(targets[:i], t) {
			return nil, fmt.Errorf("targets[%d]: %q is listed twice", i, t)
		}
	}
	var out []string
	for _, n := range names {
		if slices.Contains(targets, n) {
			out = append(out, n)
		}
	}
	return out, nil
}

// Projection is one adapted matrix: its parameter name and shape [in, out].
type Projection struct {
	Layer   int
	Module  string // Hugging Face's name: q_proj
	Param   string // alignflow's: layer0.wq
	In, Out int
}

// Projections lists the matrices c adapts in a model of cfg's
// architecture, layer by layer in Modules' order.
func (c Config) Projections(cfg transformer.Config) ([]Projection, error) {
	d, q, kv := cfg.Dim, cfg.Heads*cfg.HeadDim(), cfg.KVHeadCount()*cfg.HeadDim()
	shape := map[string][2]int{"wq": {d, q}, "wk": {d, kv}, "wv": {d, kv}, "wo": {q, d}, "w1": {d, cfg.Hidden}, "w3": {d, cfg.Hidden}, "w2": {cfg.Hidden, d}}
	targets, err := Resolve(cfg, c.Targets)
	if err != nil {
		return nil, err
	}
	var out []Projection
	for l := 0; l < cfg.Layers; l++ {
		for _, m := range Modules(cfg) {
			if slices.Contains(targets, m.Name) {
				s := shape[m.Part]
				out = append(out, Projection{Layer: l, Module: m.Name, Param: transformer.LayerParam(l, m.Part), In: s[0], Out: s[1]})
			}
		}
	}
	return out, nil
}

// Validate reports the first field of c no adapter can have.
func (c Config) Validate() error {
	switch {
	case c.Rank <= 0:
		return fmt.Errorf("rank must be positive, got %d", c.Rank)
	case !(c.Alpha > 0) || math.IsInf(c.Alpha, 0):
		return fmt.Errorf("alpha must be positive and finite, got %v", c.Alpha)
	case !(c.Dropout >= 0 && c.Dropout < 1):
		return fmt.Errorf("dropout must be in [0, 1), got %v", c.Dropout)
	}
	return nil
}

// MetaKey is the metadata key holding an adapter's JSON Config.
const MetaKey = "lora"

// Of reads the Config an adapter's metadata records; ok is false for a
// set that is not an adapter (a whole model).
func Of(s *weights.Set) (c Config, ok bool, err error) {
	raw, ok := s.Metadata[MetaKey]
	if !ok {
		return c, false, nil
	}
	if err := json.Unmarshal([]byte(raw), &c); err != nil {
		return c, true, fmt.Errorf("adapter %s metadata: %w", MetaKey, err)
	}
	return c, true, c.Validate()
}

// setConfig records c in the adapter's metadata.
func setConfig(s *weights.Set, c Config) {
	b, _ := json.Marshal(c)
	s.Metadata[MetaKey] = string(b)
}

// Init returns a fresh adapter of c for a model of cfg's architecture,
// as PEFT initialises one by default: A uniform on ±1/sqrt(in), which is
// kaiming_uniform_ with a = sqrt(5) (peft/tuners/lora/layer.py,
// reset_lora_parameters), and B zero, so that the adapted model computes
// exactly what its base does. Seeded: the same seed gives the same bits.
func Init(cfg transformer.Config, c Config, seed uint64) (*weights.Set, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	projs, err := c.Projections(cfg)
	if err != nil {
		return nil, err
	}
	c.Targets, _ = Resolve(cfg, c.Targets)
	r := rand.New(rand.NewPCG(seed, 0x10a))
	s := weights.NewSet()
	for _, p := range projs {
		a := weights.NewTensor(p.In, c.Rank)
		bound := 1 / math.Sqrt(float64(p.In))
		for i := range a.Data {
			a.Data[i] = float32((2*r.Float64() - 1) * bound)
		}
		s.Put(p.Param+transformer.LoRAA, a)
		s.Put(p.Param+transformer.LoRAB, weights.NewTensor(c.Rank, p.Out))
	}
	setConfig(s, c)
	transformer.SetConfig(s, cfg)
	s.Metadata["kind"] = "lora"
	return s, nil
}

// IsAdapterMatrix reports whether name is one of an adapter's A or B matrices.
func IsAdapterMatrix(name string) bool {
	return strings.HasSuffix(name, transformer.LoRAA) || strings.HasSuffix(name, transformer.LoRAB)
}

// Trainable splits what a model trains with an adapter: the adapter's
// matrices, and keep, the base's tensors trained in full beside them
// (PEFT's modules_to_save: a reward model's head). It returns the set of
// both, which the optimizer trains, and the frozen rest of base, which it
// only reads. The tensors are shared, not copied; both sets carry base's
// metadata, the trained one the adapter's over it.
func Trainable(base, adapter *weights.Set, keep []string) (trained, frozen *weights.Set) {
	trained, frozen = weights.NewSet(), weights.NewSet()
	for k, v := range base.Metadata {
		trained.Metadata[k], frozen.Metadata[k] = v, v
	}
	for k, v := range adapter.Metadata {
		trained.Metadata[k] = v
	}
	for _, n := range adapter.Names() {
		trained.Put(n, adapter.Get(n))
	}
	for _, n := range base.Names() {
		if slices.Contains(keep, n) {
			if trained.Get(n) == nil {
				trained.Put(n, base.Get(n))
			}
			continue
		}
		frozen.Put(n, base.Get(n))
	}
	return trained, frozen
}

// With is the model base with adapter on, unmerged: a set of base's
// tensors and the adapter's, shared, not copied, with base's metadata and
// the adapter's config, which engines that find an adapter among the
// parameters add in the graph (transformer's Params.linear). Base
// tensors the adapter also holds (a head trained in full) are the
// adapter's.
func With(base, adapter *weights.Set) *weights.Set {
	s := weights.NewSet()
	for k, v := range base.Metadata {
		s.Metadata[k] = v
	}
	s.Metadata[MetaKey] = adapter.Metadata[MetaKey]
	for _, n := range base.Names() {
		s.Put(n, base.Get(n))
	}
	for _, n := range adapter.Names() {
		s.Put(n, adapter.Get(n))
	}
	return s
}

// Merge returns a copy of base with the adapter folded in: each adapted W
// becomes W + scale * A B, PEFT's merge (W + (B A)^T * scaling in its
// layout, get_delta_weight), each product summed in float64 and rounded
// once; the adapter's other tensors (modules trained in full) replace or
// join base's. The metadata is base's, so the result is an ordinary model.
func Merge(base, adapter *weights.Set) (*weights.Set, error) {
	c, ok, err := Of(adapter)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("merge: the set is not a LoRA adapter (no %s metadata)", MetaKey)
	}
	out := base.Clone()
	scale := c.Scale()
	for _, n := range adapter.Names() {
		if !strings.HasSuffix(n, transformer.LoRAA) {
			if !IsAdapterMatrix(n) {
				t := adapter.Get(n)
				out.Put(n, &weights.Tensor{Shape: slices.Clone(t.Shape), Data: slices.Clone(t.Data)})
			}
			continue
		}
		param := strings.TrimSuffix(n, transformer.LoRAA)
		a, b, w := adapter.Get(n), adapter.Get(param+transformer.LoRAB), out.Get(param)
		if err := checkShapes(param, w, a, b, c.Rank); err != nil {
			return nil, fmt.Errorf("merge: %w", err)
		}
		addProduct(w.Data, a.Data, b.Data, w.Shape[0], c.Rank, w.Shape[1], scale)
	}
	return out, nil
}

// checkShapes reports A, B and W that do not fit together.
func checkShapes(param string, w, a, b *weights.Tensor, rank int) error {
	switch {
	case w == nil || len(w.Shape) != 2:
		return fmt.Errorf("the adapter adapts %s, which is not a matrix of the base", param)
	case b == nil:
		return fmt.Errorf("%s has %s but no %s", param, transformer.LoRAA, transformer.LoRAB)
	case !slices.Equal(a.Shape, []int{w.Shape[0], rank}) || !slices.Equal(b.Shape, []int{rank, w.Shape[1]}):
		return fmt.Errorf("%s is %v, its adapter's A %v and B %v (rank %d)", param, w.Shape, a.Shape, b.Shape, rank)
	}
	return nil
}

// addProduct adds scale * A B to w [in, out], A [in, r], B [r, out].
func addProduct(w, a, b []float32, in, r, out int, scale float64) {
	for i := 0; i < in; i++ {
		for j := 0; j < out; j++ {
			var sum float64
			for k := 0; k < r; k++ {
				sum += float64(a[i*r+k]) * float64(b[k*out+j])
			}
			w[i*out+j] = float32(float64(w[i*out+j]) + scale*sum)
		}
	}
}

// Combine stacks two adapters of one base, the second trained on top of
// the first one merged, into one adapter whose merge is both merges':
// with the same scale, s A1 B1 + s A2 B2 = s' [A1 A2] [B1; B2] at rank
// r1 + r2 and alpha chosen so that s' = s. Both must adapt the same
// modules at the same scale; the second's modules trained in full win.
func Combine(first, second *weights.Set) (*weights.Set, error) {
	c1, ok1, err1 := Of(first)
	c2, ok2, err2 := Of(second)
	switch {
	case err1 != nil || err2 != nil:
		return nil, fmt.Errorf("combine adapters: %v %v", err1, err2)
	case !ok1 || !ok2:
		return nil, fmt.Errorf("combine adapters: both must be LoRA adapters")
	case !slices.Equal(c1.Targets, c2.Targets):
		return nil, fmt.Errorf("combine adapters: they adapt different modules (%s and %s)", strings.Join(c1.Targets, ","), strings.Join(c2.Targets, ","))
	case c1.Scale() != c2.Scale():
		return nil, fmt.Errorf("combine adapters: their scales alpha/r differ (%v/%d and %v/%d), which one adapter of rank %d cannot hold", c1.Alpha, c1.Rank, c2.Alpha, c2.Rank, c1.Rank+c2.Rank)
	}
	c := Config{Rank: c1.Rank + c2.Rank, Alpha: c1.Scale() * float64(c1.Rank+c2.Rank), Targets: c1.Targets, Dropout: c2.Dropout}
	out := weights.NewSet()
	for k, v := range second.Metadata {
		out.Metadata[k] = v
	}
	for _, n := range first.Names() {
		if !IsAdapterMatrix(n) {
			out.Put(n, first.Get(n))
		}
	}
	for _, n := range second.Names() {
		if !IsAdapterMatrix(n) {
			out.Put(n, second.Get(n))
			continue
		}
		if !strings.HasSuffix(n, transformer.LoRAA) {
			continue
		}
		param := strings.TrimSuffix(n, transformer.LoRAA)
		a1, b1 := first.Get(n), first.Get(param+transformer.LoRAB)
		a2, b2 := second.Get(n), second.Get(param+transformer.LoRAB)
		if a1 == nil || b1 == nil || b2 == nil || a1.Shape[0] != a2.Shape[0] || b1.Shape[1] != b2.Shape[1] {
			return nil, fmt.Errorf("combine adapters: %s is adapted differently by the two", param)
		}
		in, outDim := a1.Shape[0], b1.Shape[1]
		a := weights.NewTensor(in, c.Rank)
		for i := 0; i < in; i++ {
			copy(a.Data[i*c.Rank:], a1.Data[i*c1.Rank:(i+1)*c1.Rank])
			copy(a.Data[i*c.Rank+c1.Rank:], a2.Data[i*c2.Rank:(i+1)*c2.Rank])
		}
		b := weights.NewTensor(c.Rank, outDim)
		copy(b.Data, b1.Data)
		copy(b.Data[len(b1.Data):], b2.Data)
		out.Put(n, a)
		out.Put(param+transformer.LoRAB, b)
	}
	if out.Len() != first.Len()+countMissing(first, second) {
		return nil, fmt.Errorf("combine adapters: the first adapts matrices the second does not")
	}
	setConfig(out, c)
	out.Metadata["kind"] = "lora"
	return out, nil
}

// countMissing counts second's tensors that first lacks.
func countMissing(first, second *weights.Set) int {
	n := 0
	for _, name := range second.Names() {
		if first.Get(name) == nil {
			n++
		}
	}
	return n
}
