package stages

import (
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/pipe-ahl/pipe/ahl/hadg"
	"github.com/pipe-ahl/pipe/artifacts"
	"github.com/pipe-ahl/pipe/kind"
)

var testGenerators = []string{"cutmix", "cutpaste", "draem"}

// hadgInputs returns ingest, clusters and augment inputs over clusteredSet.
func hadgInputs(t *testing.T) (ins []kind.Input, normals []string, assignments arrow.RecordBatch) {
	images, features, normals := clusteredSet(t)
	ingest := memInput("ingest", "", nil, map[string]arrow.RecordBatch{"images": images})
	feat := memInput("features", "", nil, map[string]arrow.RecordBatch{"features": features})
	km := runKind(t, "kmeans", nil, 3, ingest, feat)
	var pids []string
	for _, n := range normals {
		for _, g := range testGenerators {
			pids = append(pids, n+"#"+g)
		}
	}
	pseudo := mapsTableT(t, pids, 3, func(string, int, int) float32 { return 5 }, true)
	return []kind.Input{
		memInput("clusters", "", nil, km),
		ingest,
		memInput("augment", "", nil, map[string]arrow.RecordBatch{"pseudo": pseudo}),
	}, normals, km["assignments"]
}

func TestHADGStageTasks(t *testing.T) {
	ins, normals, asg := hadgInputs(t)
	out := runKind(t, "hadg", nil, 11, ins...)
	samples, err := readTasks(out["tasks"])
	if err != nil {
		t.Fatal(err)
	}
	aid, _ := artifacts.StringCol(asg, "id")
	acl, _ := artifacts.Int64Col(asg, "cluster")
	cluster := map[string]int64{}
	for i, id := range aid {
		cluster[id] = acl[i]
	}
	isNormal := setOf(normals)
	type tr struct {
		task int
		role hadg.Role
	}
	clustersOf := map[tr]map[int64]bool{}
	gens := map[tr]string{}
	tasks := map[int]bool{}
	var seen int
	for _, s := range samples {
		tasks[s.Task] = true
		k := tr{s.Task, s.Role}
		if clustersOf[k] == nil {
			clustersOf[k] = map[int64]bool{}
		}
		switch s.Kind {
		case hadg.KindNormal:
			if !isNormal[s.ID] || s.Label != 0 {
				t.Errorf("normal sample %+v is not a training normal with label 0", s)
			}
			clustersOf[k][cluster[s.ID]] = true
		case hadg.KindPseudo:
			src, g, _ := strings.Cut(s.ID, "#")
			if !isNormal[src] || g != s.Generator || s.Label != 2 {
				t.Errorf("pseudo sample %+v does not name a normal's pseudo anomaly", s)
			}
			if old, ok := gens[k]; ok && old != g {
				t.Errorf("task %d %s mixes generators %s and %s", s.Task, s.Role, old, g)
			}
			gens[k] = g
			clustersOf[k][cluster[src]] = true
		case hadg.KindSeen, hadg.KindUnseen:
			if !strings.HasPrefix(s.ID, "train/cut/") || s.Label != 1 {
				t.Errorf("anomaly sample %+v is not a seen training anomaly", s)
			}
			seen++
		default:
			t.Errorf("sample %+v has kind %q", s, s.Kind)
		}
	}
	if len(tasks) != 7 {
		t.Fatalf("%d tasks, want the default T = 7", len(tasks))
	}
	for task := 1; task < 7; task++ {
		s, q := clustersOf[tr{task, hadg.Support}], clustersOf[tr{task, hadg.Query}]
		if len(s) != 1 || len(q) != 1 {
			t.Errorf("task %d: support clusters %v, query clusters %v; want one each", task, s, q)
		}
		for c := range s {
			if q[c] {
				t.Errorf("task %d: support and query share cluster %d", task, c)
			}
		}
	}
	if len(clustersOf[tr{0, hadg.Support}])+len(clustersOf[tr{0, hadg.Query}]) < 4 {
		t.Errorf("holistic task spans clusters %v / %v, want normals of every cluster", clustersOf[tr{0, hadg.Support}], clustersOf[tr{0, hadg.Query}])
	}
	for task := 0; task < 7; task++ {
		if gs, gq := gens[tr{task, hadg.Support}], gens[tr{task, hadg.Query}]; gs != "" && gs == gq {
			t.Errorf("task %d uses generator %s for support and query", task, gs)
		}
	}
	if seen == 0 {
		t.Error("no seen anomalies in any task")
	}
	// Same seed, same tasks; T = 3 keeps tasks 0..2 and drops the rest.
	again := runKind(t, "hadg", nil, 11, ins...)
	if !tablesEqual(out["tasks"], again["tasks"]) {
		t.Error("same seed gave different tasks")
	}
	three := runKind(t, "hadg", &HADGParams{T: 3}, 11, ins...)
	s3, _ := readTasks(three["tasks"])
	if len(s3) == 0 || s3[len(s3)-1].Task != 2 {
		t.Errorf("T = 3: last task %d", s3[len(s3)-1].Task)
	}
}

func TestHADGStageWithoutClustersOrPseudo(t *testing.T) {
	ins, _, _ := hadgInputs(t)
	out := runKind(t, "hadg", &HADGParams{T: 2}, 1, ins[1]) // ingest only
	samples, _ := readTasks(out["tasks"])
	for _, s := range samples {
		if s.Kind == hadg.KindPseudo {
			t.Fatalf("pseudo sample %+v without an augment input", s)
		}
	}
	if _, err := tryKind("hadg", &HADGParams{T: 2, Generators: []string{"draem"}}, 1, ins[1]); err == nil || !strings.Contains(err.Error(), "no input has a pseudo output") {
		t.Errorf("generators without pseudo: err = %v", err)
	}
	if _, err := tryKind("hadg", &HADGParams{T: 2, Generators: []string{"perlin"}}, 1, ins...); err == nil || !strings.Contains(err.Error(), `"perlin" is not in the pseudo table`) {
		t.Errorf("unknown generator: err = %v", err)
	}
	if err := (&HADGParams{T: 0}).Validate(); err == nil {
		t.Error("T = 0 should not validate")
	}
}

// tablesEqual compares two records cell by cell.
func tablesEqual(a, b arrow.RecordBatch) bool {
	if a.NumRows() != b.NumRows() || a.NumCols() != b.NumCols() || !a.Schema().Equal(b.Schema()) {
		return false
	}
	for i := range a.Columns() {
		if a.Column(i).String() != b.Column(i).String() {
			return false
		}
	}
	return true
}
