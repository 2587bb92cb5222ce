//! The photos job's Parquet output (`--param output=parquet`): one row per photo, read
//! directly by a notebook (pandas, Polars) or a warehouse (DuckDB, Spark, BigQuery).
//!
//! Schema (every part file has it, an empty part too):
//!
//! | column | type | null when |
//! |---|---|---|
//! | `key` | string | never |
//! | `top5` | list of struct { `label`: string, `score`: double } | the photo could not be read |
//! | `error` | string | the photo was read |
//! | `embedding` | list of float (1280) | the photo could not be read; the column is there only with `embeddings=true` |
//! | `meta` | string (the sidecar's JSON, as in the line) | the photo has no `.json` sidecar |
//!
//! The values are those of the JSON lines output, to the digit: the writer takes the lines
//! the reduce writes (the photo lines; the label index is not written, a query makes it) and
//! encodes them, Snappy-compressed, in row groups of [`ROW_GROUP`] rows, each written out as
//! soon as it is full.

use std::io::Write;
use std::sync::{Arc, Mutex};

use arrow_array::builder::{
    Float32Builder, Float64Builder, ListBuilder, StringBuilder, StructBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Fields, Schema};
use jobs::sdk::{HookError, PartWriter};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde::Deserialize;

/// Rows per row group (and per batch handed to the writer).
pub const ROW_GROUP: usize = 8192;

/// One photo line of the JSON output.
#[derive(Deserialize)]
struct Row {
    key: String,
    top5: Option<Vec<Scored>>,
    error: Option<String>,
    embedding: Option<Vec<f32>>,
    meta: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Scored {
    label: String,
    score: f64,
}

fn label_fields() -> Fields {
    Fields::from(vec![
        Field::new("label", DataType::Utf8, false),
        Field::new("score", DataType::Float64, false),
    ])
}

/// The schema of the part files.
pub fn schema(embeddings: bool) -> Schema {
    let mut fields = vec![
        Field::new("key", DataType::Utf8, false),
        Field::new(
            "top5",
            DataType::List(Arc::new(Field::new(
                "item",
                DataType::Struct(label_fields()),
                true,
            ))),
            true,
        ),
        Field::new("error", DataType::Utf8, true),
    ];
    if embeddings {
        fields.push(Field::new(
            "embedding",
            DataType::List(Arc::new(Field::new("item", DataType::Float32, true))),
            true,
        ));
    }
    fields.push(Field::new("meta", DataType::Utf8, true));
    Schema::new(fields)
}

/// Bytes the Parquet writer has produced and the reduce has not yet written out.
#[derive(Clone, Default)]
struct Pending(Arc<Mutex<Vec<u8>>>);

impl Write for Pending {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Pending {
    fn drain_to(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let mut bytes = self.0.lock().unwrap_or_else(|e| e.into_inner());
        out.write_all(&bytes)?;
        bytes.clear();
        Ok(())
    }
}

/// Writes one part file of Parquet from the reduce's photo lines.
pub struct ParquetPart {
    schema: Arc<Schema>,
    writer: ArrowWriter<Pending>,
    pending: Pending,
    rows: Vec<Row>,
}

impl ParquetPart {
    /// A writer for parts with (or without) the embedding column.
    ///
    /// # Errors
    /// The writer cannot start (it writes nothing yet, so this is not expected).
    pub fn new(embeddings: bool) -> Result<Self, HookError> {
        let schema = Arc::new(schema(embeddings));
        let pending = Pending::default();
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(ROW_GROUP))
            .build();
        let writer = ArrowWriter::try_new(pending.clone(), schema.clone(), Some(props))?;
        Ok(ParquetPart {
            schema,
            writer,
            pending,
            rows: Vec::with_capacity(ROW_GROUP),
        })
    }

    fn write_rows(&mut self, out: &mut dyn Write) -> Result<(), HookError> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let batch = self.batch()?;
        self.rows.clear();
        self.writer.write(&batch)?;
        self.writer.flush()?;
        self.pending.drain_to(out)?;
        Ok(())
    }

    fn batch(&self) -> Result<RecordBatch, HookError> {
        let mut key = StringBuilder::new();
        let mut top5 = ListBuilder::new(StructBuilder::from_fields(label_fields(), 5)).with_field(
            Arc::new(Field::new("item", DataType::Struct(label_fields()), true)),
        );
        let mut error = StringBuilder::new();
        let mut embedding = ListBuilder::new(Float32Builder::new());
        let mut meta = StringBuilder::new();
        for r in &self.rows {
            key.append_value(&r.key);
            match &r.top5 {
                Some(labels) => {
                    let s = top5.values();
                    for l in labels {
                        s.field_builder::<StringBuilder>(0)
                            .expect("label column")
                            .append_value(&l.label);
                        s.field_builder::<Float64Builder>(1)
                            .expect("score column")
                            .append_value(l.score);
                        s.append(true);
                    }
                    top5.append(true);
                }
                None => top5.append(false),
            }
            error.append_option(r.error.as_deref());
            match &r.embedding {
                Some(e) => {
                    embedding.values().append_slice(e);
                    embedding.append(true);
                }
                None => embedding.append(false),
            }
            // The same text as in the JSON line: serialised by the same serializer.
            meta.append_option(r.meta.as_ref().map(serde_json::Value::to_string));
        }
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(key.finish()),
            Arc::new(top5.finish()),
            Arc::new(error.finish()),
        ];
        if self.schema.fields().len() == 5 {
            columns.push(Arc::new(embedding.finish()));
        }
        columns.push(Arc::new(meta.finish()));
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

impl PartWriter for ParquetPart {
    fn line(&mut self, line: &[u8], out: &mut dyn Write) -> Result<(), HookError> {
        let row: Row = serde_json::from_slice(line).map_err(|e| {
            format!(
                "photos: not a photo line ({e}): {}",
                String::from_utf8_lossy(&line[..line.len().min(120)])
            )
        })?;
        self.rows.push(row);
        if self.rows.len() >= ROW_GROUP {
            self.write_rows(out)?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>, out: &mut dyn Write) -> Result<(), HookError> {
        self.write_rows(out)?;
        let ParquetPart {
            writer, pending, ..
        } = *self;
        writer.close()?;
        pending.drain_to(out)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float32Type, Float64Type};
    use arrow_array::Array;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    /// Writes `lines` as a part, the way a reduce hands them over, in pieces.
    fn part(lines: &[String], embeddings: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w: Box<dyn PartWriter> = Box::new(ParquetPart::new(embeddings).unwrap());
        for l in lines {
            w.line(l.as_bytes(), &mut out).unwrap();
        }
        w.finish(&mut out).unwrap();
        out
    }

    /// Reads a part back into the JSON lines it came from.
    fn lines_of(part: Vec<u8>) -> Vec<String> {
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(part))
            .unwrap()
            .build()
            .unwrap();
        let mut out = Vec::new();
        for batch in reader {
            let b = batch.unwrap();
            let col = |name: &str| b.column_by_name(name).cloned();
            let key = col("key").unwrap();
            let (top5, error, meta) = (
                col("top5").unwrap(),
                col("error").unwrap(),
                col("meta").unwrap(),
            );
            let embedding = col("embedding");
            for i in 0..b.num_rows() {
                let mut o = serde_json::Map::new();
                o.insert("key".into(), key.as_string::<i32>().value(i).into());
                if top5.is_valid(i) {
                    let labels = top5.as_list::<i32>().value(i);
                    let s = labels.as_struct();
                    let (l, sc) = (
                        s.column(0).as_string::<i32>(),
                        s.column(1).as_primitive::<Float64Type>(),
                    );
                    let v: Vec<serde_json::Value> = (0..s.len())
                        .map(|j| serde_json::json!({"label": l.value(j), "score": sc.value(j)}))
                        .collect();
                    o.insert("top5".into(), v.into());
                }
                if error.is_valid(i) {
                    o.insert("error".into(), error.as_string::<i32>().value(i).into());
                }
                if let Some(e) = embedding.as_ref().filter(|e| e.is_valid(i)) {
                    let v = e.as_list::<i32>().value(i);
                    let f: Vec<f32> = v.as_primitive::<Float32Type>().values().to_vec();
                    o.insert("embedding".into(), serde_json::to_value(f).unwrap());
                }
                if meta.is_valid(i) {
                    let m: serde_json::Value =
                        serde_json::from_str(meta.as_string::<i32>().value(i)).unwrap();
                    o.insert("meta".into(), m);
                }
                out.push(serde_json::to_string(&o).unwrap());
            }
        }
        out
    }

    fn line(i: usize, embeddings: bool) -> String {
        let mut o = serde_json::Map::new();
        o.insert("key".into(), format!("2024/photo-{i:05}").into());
        if i % 7 == 3 {
            o.insert("error".into(), "cannot decode: truncated".into());
        } else {
            let top: Vec<serde_json::Value> = (0..5)
                .map(|j| serde_json::json!({"label": format!("label {j}"), "score": ((i * 31 + j * 7) % 10_000) as f64 / 10_000.0}))
                .collect();
            o.insert("top5".into(), top.into());
            if embeddings {
                let e: Vec<f32> = (0..1280).map(|j| (i * j) as f32 / 3.0).collect();
                o.insert("embedding".into(), serde_json::to_value(e).unwrap());
            }
        }
        if i % 5 == 0 {
            o.insert("meta".into(), serde_json::json!({"album": "trip", "n": i}));
        }
        serde_json::to_string(&o).unwrap()
    }

    #[test]
    fn every_value_of_the_lines_comes_back_from_the_part_in_several_row_groups() {
        for embeddings in [false, true] {
            let n = if embeddings { 300 } else { ROW_GROUP * 2 + 17 };
            let lines: Vec<String> = (0..n).map(|i| line(i, embeddings)).collect();
            let bytes = part(&lines, embeddings);
            assert!(bytes.starts_with(b"PAR1") && bytes.ends_with(b"PAR1"));
            let meta = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes.clone()))
                .unwrap()
                .metadata()
                .clone();
            assert_eq!(meta.file_metadata().num_rows() as usize, n);
            if !embeddings {
                assert_eq!(meta.num_row_groups(), 3);
            }
            assert_eq!(lines_of(bytes.clone()), lines, "embeddings {embeddings}");
            // The same lines give the same bytes (outputs are compared byte for byte).
            assert_eq!(part(&lines, embeddings), bytes);
        }
    }

    #[test]
    fn an_empty_part_has_the_schema_and_a_line_that_is_not_a_photo_is_refused() {
        let bytes = part(&[], false);
        let b = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes)).unwrap();
        assert_eq!(b.metadata().file_metadata().num_rows(), 0);
        assert_eq!(b.schema().as_ref(), &schema(false));
        let mut w = ParquetPart::new(false).unwrap();
        let err = w
            .line(b"espresso\tcoffee", &mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a photo line"), "{err}");
    }
}
