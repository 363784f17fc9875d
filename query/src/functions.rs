//! Scalar functions for forensic SQL: `cidr_match(ip, cidr)` and `time_bucket(width, ts)`.

use std::net::IpAddr;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanBuilder, StringArray, TimestampMicrosecondArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::{exec_err, plan_err, ScalarValue};
use datafusion::error::Result;
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};
use datafusion::prelude::SessionContext;

/// Registers the functions of this module.
pub fn register(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::from(CidrMatch::new()));
    ctx.register_udf(ScalarUDF::from(TimeBucket::new()));
}

/// A parsed CIDR block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n`, `x::y/n`, or a single address (a full-length prefix).
    pub fn parse(text: &str) -> Option<Cidr> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = addr.parse().ok()?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max)?,
            None => max,
        };
        Some(Cidr { network, prefix })
    }

    /// Whether `ip` lies in this block. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) matches an IPv4
    /// block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = if self.prefix == 0 { 0 } else { u32::MAX << (32 - self.prefix) };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = if self.prefix == 0 { 0 } else { u128::MAX << (128 - self.prefix) };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// `cidr_match(ip, cidr) -> boolean`: NULL when either is NULL, false for text that is not an address,
/// an error for a block that is not a CIDR.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct CidrMatch {
    signature: Signature,
}

impl CidrMatch {
    pub fn new() -> Self {
        CidrMatch { signature: Signature::any(2, Volatility::Immutable) }
    }
}

impl Default for CidrMatch {
    fn default() -> Self {
        Self::new()
    }
}

fn to_strings(value: &ColumnarValue, rows: usize) -> Result<StringArray> {
    let array = value.to_array(rows)?;
    let array = cast(&array, &DataType::Utf8)?;
    Ok(array.as_any().downcast_ref::<StringArray>().expect("cast to Utf8 gives a StringArray").clone())
}

impl ScalarUDFImpl for CidrMatch {
    fn name(&self) -> &str {
        "cidr_match"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        // The usual call has a constant block: parse it once.
        let constant = match &args.args[1] {
            ColumnarValue::Scalar(scalar) => Some(scalar_text(scalar)),
            ColumnarValue::Array(_) => None,
        };
        let ips = to_strings(&args.args[0], rows)?;
        let blocks = if constant.is_none() { Some(to_strings(&args.args[1], rows)?) } else { None };
        let parsed_constant = match &constant {
            Some(Some(text)) => match Cidr::parse(text) {
                Some(cidr) => Some(cidr),
                None => return exec_err!("cidr_match: '{text}' is not an IP address or CIDR block"),
            },
            _ => None,
        };
        let mut out = BooleanBuilder::with_capacity(rows);
        for i in 0..ips.len() {
            let block = match (&parsed_constant, &blocks) {
                (Some(cidr), _) => Some(*cidr),
                (None, Some(blocks)) if blocks.is_valid(i) => match Cidr::parse(blocks.value(i)) {
                    Some(cidr) => Some(cidr),
                    None => return exec_err!("cidr_match: '{}' is not an IP address or CIDR block", blocks.value(i)),
                },
                _ => None,
            };
            match (block, ips.is_valid(i)) {
                (Some(block), true) => {
                    out.append_value(ips.value(i).trim().parse::<IpAddr>().is_ok_and(|ip| block.contains(ip)))
                }
                _ => out.append_null(),
            }
        }
        let array: ArrayRef = Arc::new(out.finish());
        Ok(ColumnarValue::Array(array))
    }
}

fn scalar_text(scalar: &ScalarValue) -> Option<String> {
    if scalar.is_null() {
        None
    } else {
        match scalar {
            ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => {
                Some(s.clone())
            }
            other => Some(other.to_string()),
        }
    }
}

/// Parses a bucket width: `30s`, `1m`, `5 minutes`, `1h`, `1 day`, `500ms`; also what Grafana's
/// `$__interval` expands to. A width is at least a microsecond.
pub fn parse_width(text: &str) -> Option<i64> {
    store::time::parse_duration_micros(text).filter(|micros| *micros > 0)
}

/// `time_bucket(width, ts) -> timestamp`: the start of the `width`-long bucket (aligned to the Unix
/// epoch, in UTC) that holds `ts`. `width` is text (`'1m'`, `'5 minutes'`) or an interval without months.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TimeBucket {
    signature: Signature,
}

impl TimeBucket {
    pub fn new() -> Self {
        TimeBucket { signature: Signature::any(2, Volatility::Immutable) }
    }
}

impl Default for TimeBucket {
    fn default() -> Self {
        Self::new()
    }
}

fn bucket_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some(store::schema::TIME_ZONE.into()))
}

impl ScalarUDFImpl for TimeBucket {
    fn name(&self) -> &str {
        "time_bucket"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match &arg_types[1] {
            DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 | DataType::Utf8 | DataType::Null => {
                Ok(bucket_type())
            }
            other => plan_err!("time_bucket: the second argument must be a timestamp, not {other}"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let width = match &args.args[0] {
            ColumnarValue::Scalar(ScalarValue::IntervalMonthDayNano(Some(v))) if v.months == 0 => {
                Some(v.days as i64 * 86_400_000_000 + v.nanoseconds / 1_000)
            }
            ColumnarValue::Scalar(ScalarValue::IntervalDayTime(Some(v))) => {
                Some(v.days as i64 * 86_400_000_000 + v.milliseconds as i64 * 1_000)
            }
            ColumnarValue::Scalar(scalar) => scalar_text(scalar).and_then(|t| parse_width(&t)),
            ColumnarValue::Array(_) => return exec_err!("time_bucket: the width must be a constant"),
        };
        let Some(width) = width.filter(|w| *w > 0) else {
            return exec_err!("time_bucket: the width must be a positive duration such as '1m' or '5 minutes'");
        };
        let ts = args.args[1].to_array(args.number_rows)?;
        let ts = cast(&ts, &bucket_type())?;
        let ts = ts.as_any().downcast_ref::<TimestampMicrosecondArray>().expect("cast to the bucket type");
        let out: TimestampMicrosecondArray =
            ts.unary::<_, arrow::datatypes::TimestampMicrosecondType>(|v| v - v.rem_euclid(width));
        let out = out.with_timezone(store::schema::TIME_ZONE);
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_blocks_match_v4_v6_and_mapped_addresses() {
        let block = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(block.contains("10.1.255.3".parse().unwrap()));
        assert!(!block.contains("10.2.0.1".parse().unwrap()));
        assert!(block.contains("::ffff:10.1.2.3".parse().unwrap()));
        let v6 = Cidr::parse("fd00:ec2::/32").unwrap();
        assert!(v6.contains("fd00:ec2::254".parse().unwrap()));
        assert!(!v6.contains("10.1.2.3".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("8.8.8.8".parse().unwrap()));
        assert_eq!(Cidr::parse("1.2.3.4"), Cidr::parse("1.2.3.4/32"));
    }

    #[test]
    fn bad_blocks_are_rejected() {
        for bad in ["10.0.0.0/33", "10.0.0/8", "x/1", "", "::/129", "1.2.3.4/-1"] {
            assert_eq!(Cidr::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn widths_parse_in_grafana_and_postgres_spellings() {
        assert_eq!(parse_width("1m"), Some(60_000_000));
        assert_eq!(parse_width("5 minutes"), Some(300_000_000));
        assert_eq!(parse_width("500ms"), Some(500_000));
        assert_eq!(parse_width("1d"), Some(86_400_000_000));
        assert_eq!(parse_width("0s"), None);
        assert_eq!(parse_width("fortnight"), None);
    }
}
