package hfmodel

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/alignflow/alignflow/model/hf/safetensors"
	"github.com/alignflow/alignflow/model/lora"
	"github.com/alignflow/alignflow/model/transformer"
	"github.com/alignflow/alignflow/model/weights"
	"github.com/alignflow/alignflow/reward"
)

// PEFT's adapter directory (huggingface/peft, save_pretrained): the LoRA
// config and the adapter's tensors under PEFT's names.
const (
	PEFTConfigFile  = "adapter_config.json"
	PEFTWeightsFile = "adapter_model.safetensors"
)

// PEFT task types.
const (
	TaskCausalLM = "CAUSAL_LM"
	TaskSeqCls   = "SEQ_CLS"
)

// PEFTConfig is adapter_config.json: the fields alignflow writes, and the
// ones it checks when it reads one (readPEFTConfig refuses the features it
// does not implement, naming the field).
type PEFTConfig struct {
	PEFTType             string         `json:"peft_type"`
	TaskType             string         `json:"task_type"`
	BaseModel            string         `json:"base_model_name_or_path"`
	R                    int            `json:"r"`
	LoRAAlpha            float64        `json:"lora_alpha"`
	LoRADropout          float64        `json:"lora_dropout"`
	TargetModules        []string       `json:"target_modules"`
	ModulesToSave        []string       `json:"modules_to_save"`
	Bias                 string         `json:"bias"`
	FanInFanOut          bool           `json:"fan_in_fan_out"`
	UseRSLoRA            bool           `json:"use_rslora"`
	UseDoRA              bool           `json:"use_dora"`
	InferenceMode        bool           `json:"inference_mode"`
	InitLoRAWeights      bool           `json:"init_lora_weights"`
	LayersToTransform    any            `json:"layers_to_transform"`
	RankPattern          map[string]any `json:"rank_pattern"`
	AlphaPattern         map[string]any `json:"alpha_pattern"`
	LoRABias             bool           `json:"lora_bias"`
	LayerReplication     any            `json:"layer_replication"`
	TargetParameters     any            `json:"target_parameters"`
	AloraInvocationToken any            `json:"alora_invocation_tokens"`
}

// modulePath is the Hugging Face path of layer l's module (q_proj: the
// attention's; the rest the MLP's), as the backbone's mappings name it.
func modulePath(l int, module string) string {
	group := "mlp"
	if slices.Contains([]string{"q_proj", "k_proj", "v_proj", "o_proj"}, module) {
		group = "self_attn"
	}
	return fmt.Sprintf("model.layers.%d.%s.%s", l, group, module)
}

// peftPrefix is what PEFT's PeftModel puts before the wrapped model's
// tensor names in a saved adapter.
const peftPrefix = "base_model.model."

// peftScore is the score layer's tensor in a SEQ_CLS adapter: PEFT saves a
// module of modules_to_save under the module's own name
// (ModulesToSaveWrapper.adapter_state_dict in peft/utils/other.py).
const peftScore = peftPrefix + "score.weight"

// ExportPEFT writes adapter as PEFT's adapter directory at out (which must
// not exist; written into a temporary directory renamed into place):
// adapter_config.json and adapter_model.safetensors, each A [in, r] as
// lora_A.weight [r, in] and B [r, out] as lora_B.weight [out, r] under
// base_model.model.<module>. A SEQ_CLS adapter (a reward model's) holds
// its head too, score.weight [5, hidden] in modules_to_save. base names
// the model the adapter is relative to (base_model_name_or_path).
func ExportPEFT(out string, t transformer.Config, adapter *weights.Set, task, base string) error {
	c, ok, err := lora.Of(adapter)
	if err != nil || !ok {
		return fmt.Errorf("export PEFT adapter: not a LoRA adapter (%v)", err)
	}
	projs, err := c.Projections(t)
	if err != nil {
		return fmt.Errorf("export PEFT adapter: %w", err)
	}
	var ts []safetensors.Tensor
	for _, p := range projs {
		a, b := adapter.Get(p.Param+transformer.LoRAA), adapter.Get(p.Param+transformer.LoRAB)
		if a == nil || b == nil {
			return fmt.Errorf("export PEFT adapter: %s has no adapter", p.Param)
		}
		name := peftPrefix + modulePath(p.Layer, p.Module)
		ts = append(ts,
			safetensors.Tensor{Name: name + ".lora_A.weight", DType: safetensors.F32, Shape: []int{c.Rank, p.In}, Values: transpose(a)},
			safetensors.Tensor{Name: name + ".lora_B.weight", DType: safetensors.F32, Shape: []int{p.Out, c.Rank}, Values: transpose(b)})
	}
	cfg := PEFTConfig{PEFTType: "LORA", TaskType: task, BaseModel: base, R: c.Rank, LoRAAlpha: c.Alpha, LoRADropout: c.Dropout, TargetModules: c.Targets,
		Bias: "none", InferenceMode: true, InitLoRAWeights: true, RankPattern: map[string]any{}, AlphaPattern: map[string]any{}}
	switch task {
	case TaskSeqCls:
		head := adapter.Get(reward.HeadW)
		if head == nil {
			return fmt.Errorf("export PEFT adapter: a SEQ_CLS adapter needs the reward head %s", reward.HeadW)
		}
		if adapter.Get(reward.HeadB) != nil {
			return fmt.Errorf("export PEFT adapter: the head has a bias (%s), which score has not", reward.HeadB)
		}
		cfg.ModulesToSave = []string{"score"}
		ts = append(ts, safetensors.Tensor{Name: peftScore, DType: safetensors.F32, Shape: []int{RewardLabels, t.Dim}, Values: transpose(head)})
	case TaskCausalLM:
	default:
		return fmt.Errorf("export PEFT adapter: task type %q is not %s or %s", task, TaskCausalLM, TaskSeqCls)
	}
	js, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	files := map[string][]byte{PEFTConfigFile: append(js, '\n')}
	return exportDir(out, files, func(dir string) error {
		f, err := os.Create(filepath.Join(dir, PEFTWeightsFile))
		if err != nil {
			return err
		}
		if err := safetensors.Write(f, ts, map[string]string{"format": "pt"}); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	})
}

// transpose returns a matrix's values transposed.
func transpose(m *weights.Tensor) []float32 {
	rows, cols := m.Shape[0], m.Shape[1]
	out := make([]float32, len(m.Data))
	for i := 0; i < rows; i++ {
		for j := 0; j < cols; j++ {
			out[j*rows+i] = m.Data[i*cols+j]
		}
	}
	return out
}

// ReadPEFT reads the PEFT LoRA adapter directory dir of fsys for a model
// of t's architecture into an adapter set (lora.Of gives its Config). It
// refuses, naming the field, what alignflow does not compute: another
// peft_type, DoRA, rsLoRA's scaling, per-module ranks or alphas, biases,
// dropout, fan_in_fan_out, a subset of layers, modules trained in full (in
// a CAUSAL_LM adapter), and tensors it has no place for.
func ReadPEFT(fsys fs.FS, dir string, t transformer.Config) (*weights.Set, *PEFTConfig, error) {
	where := func(name string) string { return path.Join(dir, name) }
	raw, err := fs.ReadFile(fsys, PEFTConfigFile)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", where(PEFTConfigFile), err)
	}
	var cfg PEFTConfig
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", where(PEFTConfigFile), err)
	}
	if err := cfg.check(); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", where(PEFTConfigFile), err)
	}
	targets, err := lora.Resolve(t, cfg.TargetModules)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: target_modules: %w", where(PEFTConfigFile), err)
	}
	c := lora.Config{Rank: cfg.R, Alpha: cfg.LoRAAlpha, Targets: targets}
	projs, err := c.Projections(t)
	if err != nil {
		return nil, nil, err
	}
	st, err := safetensors.OpenFS(fsys, PEFTWeightsFile, where(PEFTWeightsFile))
	if err != nil {
		return nil, nil, err
	}
	defer st.Close()
	want := map[string]bool{}
	for _, n := range st.Names() {
		want[n] = true
	}
	read := func(name string, shape []int) (*weights.Tensor, error) {
		info, ok := st.Info(name)
		if !ok {
			return nil, fmt.Errorf("%s: tensor %s missing", where(PEFTWeightsFile), name)
		}
		if !slices.Equal(info.Shape, shape) {
			return nil, fmt.Errorf("%s: tensor %s is %v, the model's module needs %v", where(PEFTWeightsFile), name, info.Shape, shape)
		}
		v, err := st.Float32(name)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where(PEFTWeightsFile), err)
		}
		delete(want, name)
		return &weights.Tensor{Shape: []int{shape[1], shape[0]}, Data: transpose(&weights.Tensor{Shape: shape, Data: v})}, nil
	}
	s := weights.NewSet()
	for _, p := range projs {
		name := peftPrefix + modulePath(p.Layer, p.Module)
		a, err := read(name+".lora_A.weight", []int{c.Rank, p.In})
		if err != nil {
			return nil, nil, err
		}
		b, err := read(name+".lora_B.weight", []int{p.Out, c.Rank})
		if err != nil {
			return nil, nil, err
		}
		s.Put(p.Param+transformer.LoRAA, a)
		s.Put(p.Param+transformer.LoRAB, b)
	}
	if cfg.TaskType == TaskSeqCls {
		head, err := read(peftScore, []int{RewardLabels, t.Dim})
		if err != nil {
			return nil, nil, err
		}
		s.Put(reward.HeadW, head)
	}
	if len(want) > 0 {
		left := slices.Sorted(maps.Keys(want))
		return nil, nil, fmt.Errorf("%s: tensor %s is not one of the adapter's modules (%s)", where(PEFTWeightsFile), left[0], strings.Join(targets, ", "))
	}
	b, _ := json.Marshal(c)
	s.Metadata[lora.MetaKey] = string(b)
	s.Metadata["kind"] = "lora"
	return s, &cfg, nil
}

// check refuses what alignflow does not compute.
func (c PEFTConfig) check() error {
	bad := func(field, problem string) error { return fmt.Errorf("%s: %s", field, problem) }
	switch {
	case c.PEFTType != "LORA":
		return bad("peft_type", fmt.Sprintf("%q is not supported (supported: LORA)", c.PEFTType))
	case c.TaskType != TaskCausalLM && c.TaskType != TaskSeqCls:
		return bad("task_type", fmt.Sprintf("%q is not supported (supported: %s, %s)", c.TaskType, TaskCausalLM, TaskSeqCls))
	case c.UseDoRA:
		return bad("use_dora", "DoRA is not supported")
	case c.UseRSLoRA:
		return bad("use_rslora", "rsLoRA's scaling (lora_alpha / sqrt(r)) is not supported")
	case c.R <= 0:
		return bad("r", fmt.Sprintf("must be positive, got %d", c.R))
	case !(c.LoRAAlpha > 0):
		return bad("lora_alpha", fmt.Sprintf("must be positive, got %v", c.LoRAAlpha))
	case len(c.RankPattern) > 0:
		return bad("rank_pattern", "per-module ranks are not supported")
	case len(c.AlphaPattern) > 0:
		return bad("alpha_pattern", "per-module alphas are not supported")
	case c.Bias != "" && c.Bias != "none":
		return bad("bias", fmt.Sprintf("%q is not supported (supported: none)", c.Bias))
	case c.LoRABias:
		return bad("lora_bias", "a bias on lora_B is not supported")
	case c.FanInFanOut:
		return bad("fan_in_fan_out", "is for Conv1D layers (GPT-2), which Llama-family models have not")
	case c.LayersToTransform != nil:
		return bad("layers_to_transform", "adapting a subset of layers is not supported")
	case c.LayerReplication != nil:
		return bad("layer_replication", "is not supported")
	case c.TargetParameters != nil:
		return bad("target_parameters", "is not supported")
	case c.AloraInvocationToken != nil:
		return bad("alora_invocation_tokens", "activated LoRA is not supported")
	case c.TaskType == TaskCausalLM && len(c.ModulesToSave) > 0:
		return bad("modules_to_save", fmt.Sprintf("modules trained in full (%s) are not supported in a CAUSAL_LM adapter", strings.Join(c.ModulesToSave, ", ")))
	case c.TaskType == TaskSeqCls && !slices.Equal(c.ModulesToSave, []string{"score"}) && len(c.ModulesToSave) > 0:
		return bad("modules_to_save", fmt.Sprintf("a SEQ_CLS adapter may save only score, got %s", strings.Join(c.ModulesToSave, ", ")))
	}
	return nil
}
