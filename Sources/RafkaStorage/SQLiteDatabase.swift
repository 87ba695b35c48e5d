import CSQLite3

/// A minimal SQLite connection: prepared statements with text and integer bindings, and
/// transactions. Rafka keeps metadata, snapshots and backups in SQLite files.
///
/// Not thread-safe; owned by one actor or thread at a time.
public final class SQLiteDatabase {
    private var handle: OpaquePointer?
    public let path: String

    /// Opens (creating) the database at `path`: with WAL journaling and full fsync on commit
    /// when `journal`, else with neither (a scratch database that is written once, then copied).
    public init(path: String, journal: Bool = true) throws(StorageError) {
        self.path = path
        var db: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
        guard sqlite3_open_v2(path, &db, flags, nil) == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            sqlite3_close(db)
            throw StorageError(.database, "open \(path): \(message)")
        }
        self.handle = db
        if journal {
            try self.execute("PRAGMA journal_mode=WAL")
            try self.execute("PRAGMA synchronous=FULL")
        } else {
            try self.execute("PRAGMA journal_mode=OFF")
            try self.execute("PRAGMA synchronous=OFF")
        }
        try self.execute("PRAGMA foreign_keys=ON")
    }

    deinit {
        sqlite3_close_v2(self.handle)
    }

    public func close() {
        sqlite3_close_v2(self.handle)
        self.handle = nil
    }

    private func error(_ context: String) -> StorageError {
        StorageError(.database, "\(self.path): \(context): \(String(cString: sqlite3_errmsg(self.handle)))")
    }

    /// A bound value.
    public enum Value: Sendable, Equatable {
        case integer(Int64)
        case text(String)
        case null
    }

    /// Runs `sql` (which may hold several statements) without bindings.
    public func execute(_ sql: String) throws(StorageError) {
        guard sqlite3_exec(self.handle, sql, nil, nil, nil) == SQLITE_OK else { throw self.error(sql) }
    }

    /// Runs one statement with `bindings`, returning every result row.
    @discardableResult
    public func query(_ sql: String, _ bindings: [Value] = []) throws(StorageError) -> [[Value]] {
        var statement: OpaquePointer?
        guard sqlite3_prepare_v2(self.handle, sql, -1, &statement, nil) == SQLITE_OK else { throw self.error(sql) }
        defer { sqlite3_finalize(statement) }
        let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)
        for (i, value) in bindings.enumerated() {
            let position = Int32(i + 1)
            let status: Int32
            switch value {
            case .integer(let number): status = sqlite3_bind_int64(statement, position, number)
            case .text(let text): status = sqlite3_bind_text(statement, position, text, -1, transient)
            case .null: status = sqlite3_bind_null(statement, position)
            }
            guard status == SQLITE_OK else { throw self.error("bind \(position) of \(sql)") }
        }
        var rows: [[Value]] = []
        while true {
            let step = sqlite3_step(statement)
            if step == SQLITE_DONE { break }
            guard step == SQLITE_ROW else { throw self.error(sql) }
            var row: [Value] = []
            for column in 0..<sqlite3_column_count(statement) {
                switch sqlite3_column_type(statement, column) {
                case SQLITE_INTEGER: row.append(.integer(sqlite3_column_int64(statement, column)))
                case SQLITE_NULL: row.append(.null)
                default: row.append(.text(String(cString: sqlite3_column_text(statement, column))))
                }
            }
            rows.append(row)
        }
        return rows
    }

    /// Runs `body` in a transaction: committed if it returns, rolled back if it throws.
    public func transaction<T>(_ body: () throws(StorageError) -> T) throws(StorageError) -> T {
        try self.execute("BEGIN IMMEDIATE")
        do {
            let result = try body()
            try self.execute("COMMIT")
            return result
        } catch {
            try? self.execute("ROLLBACK")  // The original error is the one worth reporting.
            throw error
        }
    }
}

extension SQLiteDatabase.Value {
    public var integer: Int64? {
        if case .integer(let value) = self { return value }
        return nil
    }

    public var text: String? {
        if case .text(let value) = self { return value }
        return nil
    }
}
