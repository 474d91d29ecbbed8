package export

import (
	"encoding/json"
	"maps"
	"path/filepath"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alignflow/alignflow/artifact"
	"github.com/alignflow/alignflow/internal/fixtures"
	"github.com/alignflow/alignflow/model/backend"
	"github.com/alignflow/alignflow/model/hf/hfmodel"
	"github.com/alignflow/alignflow/model/lm"
	"github.com/alignflow/alignflow/model/transformer"
	"github.com/alignflow/alignflow/pipeline"
	"github.com/alignflow/alignflow/reward"
)

// rewardRun stores a finished run of stories260K whose reward model is a
// fresh head on its backbone, with the model's description files as
// given, and returns the store.
func rewardRun(t *testing.T, files map[string][]byte) *artifact.Store {
	t.Helper()
	src := fixtures.Path(t, "models", "stories260K")
	hf, err := hfmodel.Load(src)
	require.NoError(t, err)
	rm, err := reward.InitFromBackbone(hf.Params, 3)
	require.NoError(t, err)
	store, err := artifact.Open(t.TempDir())
	require.NoError(t, err)
	ref, err := store.PutWeights("runs/r/reward/model.safetensors", rm)
	require.NoError(t, err)
	bm := &pipeline.BaseModel{Source: src, Architecture: hf.Config.Architecture, DType: "float32", EOS: hf.EOS, Files: map[string]artifact.Ref{}}
	for name, b := range files {
		if bm.Files[name], err = store.Put("runs/r/model/"+name, b); err != nil {
			t.Fatal(err)
		}
	}
	s := pipeline.Summary{WorkflowID: "r", Data: pipeline.Data{Model: bm}}
	s.RewardModel.Checkpoint = ref
	b, err := json.Marshal(s)
	require.NoError(t, err)
	_, err = store.PutRecord("runs/r/"+pipeline.SummaryFile, b)
	require.NoError(t, err)
	return store
}

// TestExportedRewardModelScoresAsTransformersReadsIt: an exported reward
// model has a pad_token_id that no scored sequence ends with, so that
// transformers' pooling rule (the last token that is not the pad:
// transformers' LlamaForSequenceClassification.forward,
// `(token_indices * (input_ids != pad_token_id)).argmax(-1)`) on a
// right-padded batch of two gives the scores alignflow gives each sequence
// alone. Where the source config's pad_token_id is the EOS (the usual fix
// for a model without a pad), that id is refused: transformers would read
// one token early.
func TestExportedRewardModelScoresAsTransformersReadsIt(t *testing.T) {
	src := fixtures.Path(t, "models", "stories260K")
	desc, err := hfmodel.ReadDescription(src)
	require.NoError(t, err)
	files := maps.Clone(desc.Files)
	files[hfmodel.ConfigFile], err = hfmodel.WithPad(files[hfmodel.ConfigFile], 2) // pad = eos
	require.NoError(t, err)
	store := rewardRun(t, files)
	out := filepath.Join(t.TempDir(), "rm")
	_, err = Reward(store, "r", out, Merged)
	require.NoError(t, err)

	cls, err := hfmodel.Load(out)
	require.NoError(t, err)
	var cfg struct {
		Pad *int32 `json:"pad_token_id"`
	}
	require.NoError(t, json.Unmarshal(cls.Files[hfmodel.ConfigFile], &cfg))
	require.NotNil(t, cfg.Pad, "transformers refuses batches above one without a pad_token_id")
	assert.Equal(t, int32(0), *cfg.Pad, "not config.json's pad 2 (the EOS): tokenizer_config.json's unk_token <unk>")

	m, err := lm.Open(out, true)
	require.NoError(t, err)
	codec, err := m.Codec()
	require.NoError(t, err)
	long, _, _, err := codec.Sequence("Once upon a time, there was a little girl", " who liked to play.", m.Config.MaxLen)
	require.NoError(t, err)
	short, _, _, err := codec.Sequence("Tom had a dog", " named Max.", m.Config.MaxLen)
	require.NoError(t, err)
	require.Equal(t, int32(2), long[len(long)-1], "scored sequences end with the EOS")

	b, err := backend.New(backend.Go)
	require.NoError(t, err)
	eng := reward.NewEngine(b, *m.Config, m.Params)
	alone := make([]float32, 2)
	for i, seq := range [][]int32{long, short} {
		s, err := eng.Score(m.Params, [][]int32{seq}, 1)
		require.NoError(t, err)
		alone[i] = s[0][reward.Helpfulness]
	}

	// transformers: the batch right-padded with pad_token_id, each row read
	// at its last non-pad token.
	width := len(long)
	batch, last := make([][]int32, 2), make([]int32, 2)
	for i, seq := range [][]int32{long, short} {
		row := make([]int32, width)
		for j := range row {
			row[j] = *cfg.Pad
		}
		copy(row, seq)
		batch[i] = row
		for j := range row {
			if row[j] != *cfg.Pad {
				last[i] = int32(j)
			}
		}
	}
	names := m.Params.Names()
	args, err := m.Params.Args(names)
	require.NoError(t, err)
	exec := graph.MustNewExec(b, func(in []*graph.Node) *graph.Node {
		return reward.Scores(transformer.ParamsOf(names, in[:len(names)]), *m.Config, in[len(names)], in[len(names)+1])
	})
	got, err := exec.Exec1(append(args, tensors.FromValue(batch), tensors.FromValue(last))...)
	require.NoError(t, err)
	flat := tensors.MustCopyFlatData[float32](got)
	for i := range alone {
		assert.InDelta(t, alone[i], flat[i*reward.NumAttributes+reward.Helpfulness], 1e-5, "row %d: transformers' read equals alignflow's", i)
	}
}

// TestRewardExportRefusesAPadThatEndsSequences: a model whose every pad
// candidate ends scored sequences cannot be exported consistently: the
// export says which ids and why, and writes nothing.
func TestRewardExportRefusesAPadThatEndsSequences(t *testing.T) {
	src := fixtures.Path(t, "models", "stories260K")
	desc, err := hfmodel.ReadDescription(src)
	require.NoError(t, err)
	files := maps.Clone(desc.Files)
	files["tokenizer_config.json"] = []byte(`{"eos_token": "</s>", "pad_token": "</s>"}`)
	var c map[string]any
	require.NoError(t, json.Unmarshal(files[hfmodel.ConfigFile], &c))
	delete(c, "bos_token_id")
	files[hfmodel.ConfigFile], err = json.Marshal(c)
	require.NoError(t, err)
	store := rewardRun(t, files)
	out := filepath.Join(t.TempDir(), "rm")
	_, err = Reward(store, "r", out, Merged)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `tokenizer_config.json's pad_token "</s>" 2 ends scored sequences (ending ids [2])`)
	assert.NoDirExists(t, out)
}
