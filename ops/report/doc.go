// Package report renders what runs produce for people to read. A run's
// report (Load, Render, then Save into the store or WriteDir into a
// folder) is report.md and report.html with PNG and SVG charts drawn by
// gonum/plot: SFT and reward-model loss, REINFORCE reward, gold score, KL,
// length and EOS fraction per iteration, reward-model accuracy by
// |strength| or, for a comparison, every variant's accuracy and bench
// categories; the before/after samples; and the stage timeline with its
// retries (Timeline, Stages), from the workflow history as
// temporalconn.ParseRun reads it. The WriteRunReport activity writes it at
// a run's end and `alignflow report` on demand. ComparisonMarkdown renders
// the reward-model comparison as tables shaped like the paper's, for the
// WriteReport activity and the command line.
package report
