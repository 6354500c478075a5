//! The node's table of live rooms, shared by [`super::Rooms`] and the
//! room tasks that remove themselves from it when they end.

use super::handle::RoomHandle;
use super::members::RoomShared;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

/// Room name → its handle.
pub(super) type RoomTable = Arc<Mutex<HashMap<Arc<str>, RoomHandle>>>;

/// Removes `name` from the table if it still refers to that room.
pub(super) fn forget(table: &RoomTable, name: &str, shared: &Arc<RoomShared>) {
    let mut t = table.lock();
    if t.get(name).is_some_and(|h| Arc::ptr_eq(&h.shared, shared)) {
        t.remove(name);
    }
}
