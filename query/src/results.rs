//! Results written as JSON, CSV or an Arrow IPC stream one batch at a time, so that the HTTP API sends a
//! result while it is computed and holds one batch of it, not all of it.
//!
//! JSON: `{"columns":[{"name","type"}...],"rows":[{...}...],"row_count":N,"elapsed_ms":X}`; the count and
//! the time come last because they are known last. A result cut short after it began ends with
//! `"error":{"error","kind","sqlstate"}` in place of the count (`error_trailer`).

use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

use crate::error::QueryError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
    Arrow,
}

impl Format {
    pub fn parse(text: &str) -> Option<Format> {
        match text.trim().to_ascii_lowercase().as_str() {
            "json" | "application/json" => Some(Format::Json),
            "csv" | "text/csv" => Some(Format::Csv),
            "arrow" | "ipc" | "application/vnd.apache.arrow.stream" => Some(Format::Arrow),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Arrow => "application/vnd.apache.arrow.stream",
        }
    }
}

enum Writer {
    Json(arrow_json::ArrayWriter<Vec<u8>>),
    Csv { header_written: bool },
    Arrow(arrow::ipc::writer::StreamWriter<Vec<u8>>),
}

/// Writes one result, batch by batch, into a buffer the caller drains.
pub struct ResultEncoder {
    schema: SchemaRef,
    writer: Writer,
    rows: usize,
}

impl ResultEncoder {
    /// Starts a result of `schema`, writing what comes before the rows into `out`.
    pub fn begin(format: Format, schema: SchemaRef, out: &mut Vec<u8>) -> Result<ResultEncoder, ArrowError> {
        let writer = match format {
            Format::Json => {
                let columns: Vec<serde_json::Value> = schema
                    .fields()
                    .iter()
                    .map(|f| serde_json::json!({ "name": f.name(), "type": f.data_type().to_string() }))
                    .collect();
                out.extend_from_slice(b"{\"columns\":");
                out.extend_from_slice(serde_json::Value::Array(columns).to_string().as_bytes());
                out.extend_from_slice(b",\"rows\":");
                Writer::Json(arrow_json::ArrayWriter::new(Vec::new()))
            }
            Format::Csv => Writer::Csv { header_written: false },
            Format::Arrow => {
                let mut writer = arrow::ipc::writer::StreamWriter::try_new(Vec::new(), &schema)?;
                out.append(writer.get_mut());
                Writer::Arrow(writer)
            }
        };
        Ok(ResultEncoder { schema, writer, rows: 0 })
    }

    /// Writes one batch of rows into `out`.
    pub fn write(&mut self, batch: &RecordBatch, out: &mut Vec<u8>) -> Result<(), ArrowError> {
        self.rows += batch.num_rows();
        match &mut self.writer {
            Writer::Json(writer) => {
                writer.write(batch)?;
                out.append(writer.get_mut());
            }
            Writer::Csv { header_written } => {
                if batch.num_rows() > 0 || !*header_written {
                    let mut writer = arrow_csv::WriterBuilder::new().with_header(!*header_written).build(&mut *out);
                    writer.write(batch)?;
                    *header_written = true;
                }
            }
            Writer::Arrow(writer) => {
                writer.write(batch)?;
                out.append(writer.get_mut());
            }
        }
        Ok(())
    }

    /// Ends the result: what comes after the rows.
    pub fn finish(mut self, elapsed: std::time::Duration, out: &mut Vec<u8>) -> Result<(), ArrowError> {
        match &mut self.writer {
            Writer::Json(writer) => {
                // `[]` when no row was written.
                writer.finish()?;
                out.append(writer.get_mut());
                let tail = format!(",\"row_count\":{},\"elapsed_ms\":{:.3}}}", self.rows, elapsed.as_secs_f64() * 1e3);
                out.extend_from_slice(tail.as_bytes());
            }
            Writer::Csv { header_written: false } => {
                let empty = RecordBatch::new_empty(self.schema.clone());
                let mut writer = arrow_csv::WriterBuilder::new().with_header(true).build(&mut *out);
                writer.write(&empty)?;
            }
            Writer::Csv { .. } => {}
            Writer::Arrow(writer) => {
                writer.finish()?;
                out.append(writer.get_mut());
            }
        }
        Ok(())
    }

    /// What ends a result cut short by `error` after some of it was sent, for the people reading it (the
    /// connection is cut all the same, so that no client takes the result for whole): JSON closes the
    /// rows and names the error, so the document still parses; CSV gets a last line starting with `#`.
    /// An Arrow stream has no room for it; the cut connection says it.
    pub fn error_trailer(&self, error: &QueryError) -> Option<Vec<u8>> {
        match self.writer {
            Writer::Json(_) => {
                let error = serde_json::json!({ "error": error.to_string(), "kind": error.kind(), "sqlstate": error.sqlstate() });
                let open = if self.rows == 0 { "[" } else { "" };
                Some(format!("{open}],\"error\":{error}}}").into_bytes())
            }
            Writer::Csv { .. } => Some(format!("# the result was cut short: {error}\n").into_bytes()),
            Writer::Arrow(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(ids: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("s", DataType::Utf8, true),
        ]));
        let names: Vec<String> = ids.iter().map(|i| format!("n{i}")).collect();
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(ids.to_vec())), Arc::new(StringArray::from(names))])
            .unwrap()
    }

    fn encode(format: Format, batches: &[RecordBatch]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = ResultEncoder::begin(format, batch(&[]).schema(), &mut out).unwrap();
        for b in batches {
            encoder.write(b, &mut out).unwrap();
        }
        encoder.finish(std::time::Duration::from_millis(2), &mut out).unwrap();
        out
    }

    #[test]
    fn json_written_batch_by_batch_is_one_document_with_every_row() {
        let json: serde_json::Value =
            serde_json::from_slice(&encode(Format::Json, &[batch(&[1, 2]), batch(&[]), batch(&[3])])).unwrap();
        assert_eq!(json["row_count"], 3);
        assert_eq!(json["rows"].as_array().unwrap().len(), 3);
        assert_eq!(json["rows"][2]["s"], "n3");
        assert_eq!(json["columns"][0]["name"], "id");
        let empty: serde_json::Value = serde_json::from_slice(&encode(Format::Json, &[])).unwrap();
        assert_eq!(empty["rows"], serde_json::json!([]));
    }

    #[test]
    fn csv_has_one_header_and_arrow_reads_back_every_batch() {
        let csv = String::from_utf8(encode(Format::Csv, &[batch(&[1]), batch(&[2, 3])])).unwrap();
        assert_eq!(csv, "id,s\n1,n1\n2,n2\n3,n3\n");
        assert_eq!(String::from_utf8(encode(Format::Csv, &[])).unwrap(), "id,s\n");
        let arrow = encode(Format::Arrow, &[batch(&[1]), batch(&[2, 3])]);
        let reader = arrow::ipc::reader::StreamReader::try_new(&arrow[..], None).unwrap();
        let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
        assert_eq!(rows, 3);
    }

    #[test]
    fn a_json_result_cut_short_names_its_error_and_stays_json() {
        for sent in [vec![], vec![batch(&[1, 2])]] {
            let mut out = Vec::new();
            let mut encoder = ResultEncoder::begin(Format::Json, batch(&[]).schema(), &mut out).unwrap();
            for b in &sent {
                encoder.write(b, &mut out).unwrap();
            }
            out.extend(encoder.error_trailer(&QueryError::ResultTooBig(10)).unwrap());
            let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(json["error"]["kind"], "too_large", "{json}");
            assert_eq!(json["rows"].as_array().unwrap().len(), sent.iter().map(|b| b.num_rows()).sum::<usize>());
            assert!(json.get("row_count").is_none());
        }
    }
}
