package activities

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"go.temporal.io/sdk/temporal"

	"github.com/alignflow/alignflow/pipeline"
)

// checkClaim and putClaim make run runID's folder the artifacts of the alignment whose
// first workflow run is firstRunID, recording it in pipeline.RunFile, so
// that each alignment's artifacts stay apart from an earlier one's under
// the same workflow ID. Temporal lets a workflow ID be used again once its
// run closed; a new alignment would then write its data and checkpoints
// among the earlier one's, and `alignflow gc`, reading the earlier
// summary, would take them for a finished run's leftovers. The claim keeps
// what should keep working: a retried attempt, a run continued as new and
// one resumed by `alignflow resume` (a reset) are the same alignment, since
// Temporal keeps the first run ID through all three; reuse reads other
// runs' artifacts by reference and never writes into them.
//
// A folder claimed by another alignment, or one without a claim that holds
// a finished run's summary or comparison report (a run from before claims),
// fails the stage non-retryably (pipeline.ErrRunExists), naming the folder
// and what to do. A folder without either (a run from before claims that
// did not finish, resumed into this code) is claimed. firstRunID ""
// (scheduled by a workflow recorded before claims) claims nothing.
//
// The data stage checks the claim before it does anything (checkClaim) and
// claims the folder once its data is ready (putClaim): a data stage that
// fails on bad input leaves nothing behind, and the same ID can be used
// again once the input is fixed.
func (a *Activities) checkClaim(runID, firstRunID string) error {
	if firstRunID == "" {
		return nil
	}
	key, err := runPath(runID, pipeline.RunFile)
	if err != nil {
		return err
	}
	dir, err := runPath(runID)
	if err != nil {
		return err
	}
	b, err := a.Store.GetRecord(key)
	switch {
	case err == nil:
		var c pipeline.RunClaim
		if json.Unmarshal(b, &c) == nil && c.FirstRunID == firstRunID {
			return nil
		}
		return taken(runID, fmt.Sprintf("%s holds the artifacts of an earlier run under this ID (first run %s)", a.Store.Where(key), c.FirstRunID))
	case !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("read the claim on run folder %s: %w", a.Store.Where(key), err) // the store is unreachable: retried
	}
	for _, f := range []string{pipeline.SummaryFile, pipeline.ComparisonFile} {
		fk, err := runPath(runID, f)
		if err != nil {
			return err
		}
		_, err = a.Store.GetRecord(fk)
		switch {
		case err == nil:
			return taken(runID, fmt.Sprintf("%s is the summary of a finished run under this ID", a.Store.Where(fk)))
		case !errors.Is(err, os.ErrNotExist):
			return fmt.Errorf("look for an earlier run in %s: %w", a.Store.Where(dir), err)
		}
	}
	return nil
}

// putClaim claims run runID's folder for the alignment of firstRunID
// (checkClaim said it may).
func (a *Activities) putClaim(runID, firstRunID string) error {
	if firstRunID == "" {
		return nil
	}
	key, err := runPath(runID, pipeline.RunFile)
	if err != nil {
		return err
	}
	claim, _ := json.Marshal(pipeline.RunClaim{WorkflowID: runID, FirstRunID: firstRunID})
	if _, err := a.Store.PutRecord(key, claim); err != nil {
		return fmt.Errorf("claim run folder %s: %w", a.Store.Where(key), err)
	}
	return nil
}

func taken(runID, why string) error {
	return temporal.NewNonRetryableApplicationError(fmt.Sprintf("workflow ID %s is taken: %s; start this run under another workflow ID, "+
		"or resume the earlier one with `alignflow resume %s` if it did not finish", runID, why, runID), pipeline.ErrRunExists, nil)
}
