//! Checksums of stored rows, for damage SQLite does not see: SQLite checks its pages' structure,
//! not the values in them, so a flipped byte inside a state would otherwise change a run's data
//! silently. Every run row and history row is saved with a CRC-32 of its values and checked on
//! every read, and before `save_step` overwrites a run.
//!
//! CRC-32 (the `crc32fast` crate): it detects every error of up to 32 flipped bits in a row
//! (and any single flipped byte), which is the damage this is for; it is not a defence against
//! someone who edits the file on purpose (they can fix the checksum too), so a cryptographic
//! hash would cost more for nothing. `crc32fast` is the widely used implementation (flate2,
//! zip, png; already in this workspace's dependency tree through wasmtime), uses the CPU's
//! carry-less multiply where there is one (gigabytes per second), and is safe Rust on top.
//!
//! What a checksum covers: the typed values (SQLite type, and the bytes or integer) of the
//! columns below, in order, so that a changed type or a value moved between columns is seen.
//! A run's row: `id, flow, flow_file, definition, state, next_check_ms, last_error,
//! created_ms` and, when it is set, `deployment` — every column that only `create_run`,
//! `save_step` and `move_run` write (the last two recompute the checksum from the checked row);
//! `status` and `updated_ms` (which a cancel changes without reading the state) and the lease
//! (claims) are left out. `deployment` is covered only when set so that rows saved before
//! deployments (schema version 5) keep a valid checksum; setting or clearing it by hand still
//! changes the list of values, so it is seen. A history row: every column. A deployment's row:
//! `id, flow, source, source_path, created_ms` and then, in order, each plugin's `name` and
//! `sha256` from `deployment_plugins` (so a plugin row removed, added, reordered or edited is
//! seen too); the plugins' bytes are checked against their SHA-256 instead. Rows saved before
//! schema version 4 have no checksum (`NULL`) and are read unchecked; a run's row gets one at
//! its next save.

use rusqlite::Row;
use rusqlite::types::ValueRef;

/// The checksum of `values`, in order.
pub(super) fn of(values: &[ValueRef<'_>]) -> u32 {
    let mut sum = Sum::default();
    for value in values {
        sum.add(*value);
    }
    sum.finish()
}

/// A checksum built value by value, for rows whose values are not in one slice (a deployment
/// and its plugins); the same result as [`of`] over the same values.
#[derive(Default)]
pub(super) struct Sum(crc32fast::Hasher);

impl Sum {
    /// Adds one value, with its type and (for texts and blobs) its length.
    pub(super) fn add(&mut self, value: ValueRef<'_>) {
        let hasher = &mut self.0;
        match value {
            ValueRef::Null => hasher.update(&[0]),
            ValueRef::Integer(i) => {
                hasher.update(&[1]);
                hasher.update(&i.to_le_bytes());
            }
            ValueRef::Real(f) => {
                hasher.update(&[2]);
                hasher.update(&f.to_bits().to_le_bytes());
            }
            ValueRef::Text(bytes) => {
                hasher.update(&[3]);
                hasher.update(&len(bytes));
                hasher.update(bytes);
            }
            ValueRef::Blob(bytes) => {
                hasher.update(&[4]);
                hasher.update(&len(bytes));
                hasher.update(bytes);
            }
        }
    }

    /// The checksum of the values added.
    pub(super) fn finish(self) -> u32 {
        self.0.finalize()
    }
}

/// The values a run's checksum covers, in its order: `id, flow, flow_file, definition, state,
/// next_check_ms, last_error, created_ms, deployment`.
pub(super) type RunValues<'a> = [ValueRef<'a>; 9];

/// The checksum of a run's row: [`RunValues`], `deployment` only when it is set (see the
/// module's documentation).
pub(super) fn run(values: &RunValues<'_>) -> u32 {
    match values {
        [covered @ .., ValueRef::Null] => of(covered),
        all => of(all),
    }
}

/// The length prefix of a text or blob, so that values cannot run into each other.
fn len(bytes: &[u8]) -> [u8; 8] {
    u64::try_from(bytes.len()).unwrap_or(u64::MAX).to_le_bytes()
}

/// The checksum of the columns `indexes` of `row`, as stored; `None` when an index is not in
/// the row (a query that does not select them).
pub(super) fn of_columns(row: &Row<'_>, indexes: &[usize]) -> Option<u32> {
    let mut values = Vec::with_capacity(indexes.len());
    for &index in indexes {
        values.push(row.get_ref(index).ok()?);
    }
    Some(of(&values))
}

/// A text value as SQLite stores it.
pub(super) fn text(value: &str) -> ValueRef<'_> {
    ValueRef::Text(value.as_bytes())
}

/// An optional text value as SQLite stores it.
pub(super) fn opt_text(value: Option<&str>) -> ValueRef<'_> {
    value.map_or(ValueRef::Null, text)
}

/// An optional integer as SQLite stores it.
pub(super) fn opt_int(value: Option<i64>) -> ValueRef<'static> {
    value.map_or(ValueRef::Null, ValueRef::Integer)
}

/// The stored checksum as a number: `u32` values in an INTEGER column.
pub(super) fn to_stored(checksum: u32) -> i64 {
    i64::from(checksum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_and_boundaries_change_the_checksum() {
        let a = of(&[text("ab"), text("c")]);
        assert_ne!(
            a,
            of(&[text("a"), text("bc")]),
            "values cannot run together"
        );
        assert_ne!(of(&[ValueRef::Integer(1)]), of(&[text("1")]));
        assert_ne!(of(&[ValueRef::Null]), of(&[text("")]));
        assert_eq!(a, of(&[text("ab"), text("c")]));
    }

    #[test]
    fn a_run_without_a_deployment_keeps_its_older_checksum() {
        let mut values: RunValues<'_> = [ValueRef::Null; 9];
        values[0] = text("r");
        let older = of(&values[..8]);
        assert_eq!(run(&values), older);
        values[8] = text("abc");
        assert_ne!(run(&values), older);
        assert_ne!(run(&values), of(&values[..8]));
    }
}
