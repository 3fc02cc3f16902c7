package artifacts

import (
	"reflect"
	"testing"
)

func TestTableRoundTrip(t *testing.T) {
	rec, err := NewTable(
		Strings("id", []string{"a", "b"}),
		Int64s("label", []int64{0, 1}),
		Float32Lists("values", [][]float32{{1, 2, 3}, {4}}),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Release()
	ids, err := StringCol(rec, "id")
	if err != nil || !reflect.DeepEqual(ids, []string{"a", "b"}) {
		t.Fatalf("ids %v %v", ids, err)
	}
	vals, err := Float32ListCol(rec, "values")
	if err != nil || !reflect.DeepEqual(vals, [][]float32{{1, 2, 3}, {4}}) {
		t.Fatalf("values %v %v", vals, err)
	}
	if _, err := Int64Col(rec, "id"); err == nil {
		t.Fatal("reading a string column as int64 should fail")
	}
	if _, err := StringCol(rec, "missing"); err == nil {
		t.Fatal("reading a missing column should fail")
	}
	if _, err := NewTable(Strings("a", []string{"x"}), Int64s("b", nil)); err == nil {
		t.Fatal("columns of different lengths should fail")
	}
}

func TestTensorTable(t *testing.T) {
	ts := []Tensor{{"w", []int64{2, 2}, []float32{1, 2, 3, 4}}, {"b", []int64{1}, []float32{5}}}
	rec, err := TensorTable(ts)
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Release()
	got, err := ReadTensors(rec)
	if err != nil || !reflect.DeepEqual(got, ts) {
		t.Fatalf("got %v %v", got, err)
	}
	if _, err := TensorTable([]Tensor{{"bad", []int64{3}, []float32{1}}}); err == nil {
		t.Fatal("shape mismatch should fail")
	}
}
