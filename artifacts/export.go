package artifacts

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/ipc"
)

// ExportIPCFile writes rec in the Arrow IPC file format (".arrow", "Feather v2"), which
// pyarrow (pyarrow.ipc.open_file, pyarrow.feather.read_table), DuckDB and arrow JS read.
func ExportIPCFile(rec arrow.RecordBatch, w io.Writer) error {
	if rec == nil {
		return errors.New("artifacts: export: nil record")
	}
	fw, err := ipc.NewFileWriter(w, ipc.WithSchema(rec.Schema()))
	if err != nil {
		return fmt.Errorf("artifacts: export Arrow IPC file: %w", err)
	}
	if err := fw.Write(rec); err != nil {
		_ = fw.Close() // the write error is the one to report
		return fmt.Errorf("artifacts: export Arrow IPC file: %w", err)
	}
	if err := fw.Close(); err != nil {
		return fmt.Errorf("artifacts: export Arrow IPC file: %w", err)
	}
	return nil
}

// ExportCSV writes rec as CSV with a header row of column names. Scalars are written as
// text (floats in the shortest form that reads back exactly), nulls as empty cells, list
// and struct columns as JSON arrays and objects (NaN and infinities inside them as the
// strings "NaN", "+Inf", "-Inf", since JSON has no such numbers), and binary columns
// (for example encoded images) as standard base64 of the bytes, so nothing is lost.
func ExportCSV(rec arrow.RecordBatch, w io.Writer) error {
	if rec == nil {
		return errors.New("artifacts: export: nil record")
	}
	cw := csv.NewWriter(w)
	if err := cw.Write(fieldNames(rec)); err != nil {
		return fmt.Errorf("artifacts: export CSV: %w", err)
	}
	row := make([]string, rec.NumCols())
	for i := range int(rec.NumRows()) {
		for j, col := range rec.Columns() {
			if col.IsNull(i) {
				row[j] = ""
			} else {
				row[j] = col.ValueStr(i)
			}
		}
		if err := cw.Write(row); err != nil {
			return fmt.Errorf("artifacts: export CSV row %d: %w", i, err)
		}
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return fmt.Errorf("artifacts: export CSV: %w", err)
	}
	return nil
}
