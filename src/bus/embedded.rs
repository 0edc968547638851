// TEMPORARY compile placeholder; replaced by the real embedded log.
use std::path::Path;
use bytes::Bytes;
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedLogError { #[error("x")] X }
pub struct EmbeddedLog;
pub struct Record { pub offset: u64, pub key: Bytes, pub payload: Bytes }
pub struct LogReader;
impl LogReader { pub fn read(&mut self, _max: usize) -> Result<Vec<Record>, EmbeddedLogError> { todo!() } }
impl EmbeddedLog {
  pub fn open(_dir: &Path) -> Result<EmbeddedLog, EmbeddedLogError> { todo!() }
  pub fn append(&self, _topic: &str, _records: &[(&[u8], &[u8])]) -> Result<u64, EmbeddedLogError> { todo!() }
  pub fn end_offset(&self, _topic: &str) -> Result<u64, EmbeddedLogError> { todo!() }
  pub fn reader(&self, _topic: &str, _from: u64) -> Result<LogReader, EmbeddedLogError> { todo!() }
  pub fn commit(&self, _g: &str, _t: &str, _n: u64) -> Result<(), EmbeddedLogError> { todo!() }
  pub fn committed(&self, _g: &str, _t: &str) -> Result<u64, EmbeddedLogError> { todo!() }
}
