-- The bundled demo database that the embedded default patina.toml backs up.
-- Regenerate with:  rm -f examples/data/demo-app.db && sqlite3 examples/data/demo-app.db < examples/data/demo-app.sql
-- Deterministic: no random(), no clock.
PRAGMA foreign_keys = ON;
PRAGMA journal_mode = WAL;

CREATE TABLE users (
  id INTEGER PRIMARY KEY,
  email TEXT UNIQUE NOT NULL,
  name TEXT,
  created_at INTEGER NOT NULL,
  updated_at INTEGER
);

CREATE TABLE posts (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  author_id INTEGER NOT NULL REFERENCES users(id),
  slug TEXT NOT NULL UNIQUE,
  title TEXT NOT NULL,
  body TEXT NOT NULL,
  rating REAL,
  published INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL
);
CREATE INDEX posts_by_author ON posts(author_id, created_at);

CREATE TABLE sessions (
  token TEXT PRIMARY KEY,
  user_id INTEGER NOT NULL REFERENCES users(id),
  expires_at INTEGER NOT NULL,
  data BLOB
) WITHOUT ROWID;

CREATE TABLE audit_log (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  post_id INTEGER NOT NULL,
  action TEXT NOT NULL
);

CREATE TRIGGER posts_audit AFTER INSERT ON posts BEGIN
  INSERT INTO audit_log (post_id, action) VALUES (new.id, 'created');
END;

CREATE VIEW published_posts AS
  SELECT p.id, p.title, u.name AS author FROM posts p JOIN users u ON u.id = p.author_id
  WHERE p.published = 1;

WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40)
INSERT INTO users (id, email, name, created_at, updated_at)
SELECT i, 'user' || i || '@example.com',
       CASE i % 5 WHEN 0 THEN NULL WHEN 1 THEN 'Zoë O''Brien ' || i ELSE 'User ' || i END,
       1767225600 + i * 3600, CASE WHEN i % 3 = 0 THEN NULL ELSE 1767225600 + i * 7200 END
FROM n;

WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200)
INSERT INTO posts (author_id, slug, title, body, rating, published, created_at)
SELECT 1 + (i * 7) % 40, 'post-' || i, 'Post number ' || i,
       'Line one of post ' || i || char(10) || 'Line two, with a tab' || char(9) || 'and ✨ unicode',
       CASE WHEN i % 4 = 0 THEN NULL ELSE (i % 50) / 10.0 END,
       i % 2, 1767225600 + i * 600
FROM n;

WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 60)
INSERT INTO sessions (token, user_id, expires_at, data)
SELECT printf('tok_%04d', i), 1 + i % 40, 1767225600 + i * 86400,
       CASE WHEN i % 2 = 0 THEN zeroblob(16) ELSE X'DEADBEEF' END
FROM n;

PRAGMA journal_mode = DELETE;
