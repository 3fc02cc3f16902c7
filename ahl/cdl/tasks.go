package cdl

import (
	"fmt"

	"github.com/pipe-ahl/pipe/ahl/fmap"
	"github.com/pipe-ahl/pipe/ahl/hadg"
	"github.com/pipe-ahl/pipe/ahl/heads"
)

// Tasks is the HADG tasks resolved against a feature pool: every sample's pool row, and the
// distinct training samples (pool rows) over all tasks, in order of first appearance.
type Tasks struct {
	T int
	// Support and Query hold, per task, the pool rows and labels of its two sets.
	Support, Query []RowSet
	// Rows are the distinct training samples j; Labels their labels.
	Rows, Labels []int
	// InSupport[i][j] says whether sample Rows[j] is in task i's support set.
	InSupport [][]bool
	// Normals are the pool rows of the distinct training normals.
	Normals []int
}

// RowSet is a set of pool rows with their labels.
type RowSet struct {
	Rows, Labels []int
}

// ResolveTasks maps HADG samples onto pool rows by ID. Tasks are numbered 0..T-1 and each must
// have a non-empty support and query set; a sample whose ID is not in the pool, a label
// outside 0..2, or one image carrying two different labels is an error naming the sample.
func ResolveTasks(pool fmap.Set, samples []hadg.Sample) (Tasks, error) {
	rowOf := make(map[string]int, pool.Len())
	for i, id := range pool.IDs {
		if _, dup := rowOf[id]; dup {
			return Tasks{}, fmt.Errorf("cdl: feature pool holds ID %q twice", id)
		}
		rowOf[id] = i
	}
	t := 0
	for _, s := range samples {
		if s.Task < 0 {
			return Tasks{}, fmt.Errorf("cdl: sample %q has task %d, want >= 0", s.ID, s.Task)
		}
		t = max(t, s.Task+1)
	}
	if t == 0 {
		return Tasks{}, fmt.Errorf("cdl: no task samples")
	}
	ts := Tasks{T: t, Support: make([]RowSet, t), Query: make([]RowSet, t)}
	index := map[int]int{} // pool row -> j
	for _, s := range samples {
		r, ok := rowOf[s.ID]
		if !ok {
			return Tasks{}, fmt.Errorf("cdl: task %d %s sample %q has no feature maps in the pool", s.Task, s.Role, s.ID)
		}
		if s.Label < 0 || s.Label >= heads.NLabels {
			return Tasks{}, fmt.Errorf("cdl: task %d %s sample %q has label %d, want 0, 1 or 2", s.Task, s.Role, s.ID, s.Label)
		}
		var set *RowSet
		switch s.Role {
		case hadg.Support:
			set = &ts.Support[s.Task]
		case hadg.Query:
			set = &ts.Query[s.Task]
		default:
			return Tasks{}, fmt.Errorf("cdl: task %d sample %q has role %q, want support or query", s.Task, s.ID, s.Role)
		}
		set.Rows = append(set.Rows, r)
		set.Labels = append(set.Labels, s.Label)
		j, seen := index[r]
		if !seen {
			j = len(ts.Rows)
			index[r] = j
			ts.Rows = append(ts.Rows, r)
			ts.Labels = append(ts.Labels, s.Label)
			if s.Label == heads.Normal {
				ts.Normals = append(ts.Normals, r)
			}
		} else if ts.Labels[j] != s.Label {
			return Tasks{}, fmt.Errorf("cdl: sample %q has label %d in task %d but %d elsewhere", s.ID, s.Label, s.Task, ts.Labels[j])
		}
	}
	ts.InSupport = make([][]bool, t)
	for i := 0; i < t; i++ {
		if len(ts.Support[i].Rows) == 0 || len(ts.Query[i].Rows) == 0 {
			return Tasks{}, fmt.Errorf("cdl: task %d has %d support and %d query samples, want both > 0", i, len(ts.Support[i].Rows), len(ts.Query[i].Rows))
		}
		ts.InSupport[i] = make([]bool, len(ts.Rows))
		for _, r := range ts.Support[i].Rows {
			ts.InSupport[i][index[r]] = true
		}
	}
	if len(ts.Normals) == 0 {
		return Tasks{}, fmt.Errorf("cdl: the tasks hold no normal samples")
	}
	return ts, nil
}
