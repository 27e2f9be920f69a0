-- Okapi BM25 keyword search: an inverted index (postings) of every chunk's stemmed terms.
--
-- `chunks.tsv` becomes a plain column filled by a trigger together with `term_count` (the chunk's
-- length in terms, BM25's dl), because a generated column is computed after BEFORE triggers.
-- Statement-level triggers with transition tables keep `chunk_terms` in step with `chunks` for
-- every write path, INSERT, COPY, UPDATE and cascaded DELETE alike, in the writer's transaction.
-- Document frequencies, the chunk count and the average length are read from these tables at
-- query time, so they are always exact and no counter row is contended by concurrent writers.
ALTER TABLE chunks ALTER COLUMN tsv DROP EXPRESSION;
ALTER TABLE chunks ADD COLUMN term_count integer NOT NULL DEFAULT 0;

CREATE FUNCTION ragline_chunk_terms() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.tsv := to_tsvector('english', NEW.text);
    -- A lexeme's positions count its occurrences (stop words leave gaps but no entries).
    NEW.term_count := coalesce(
        (SELECT sum(coalesce(array_length(positions, 1), 1)) FROM unnest(NEW.tsv)), 0);
    RETURN NEW;
END $$;

CREATE TRIGGER chunks_terms_before BEFORE INSERT OR UPDATE OF text ON chunks
    FOR EACH ROW EXECUTE FUNCTION ragline_chunk_terms();

UPDATE chunks SET text = text;

-- One row per (collection, term, chunk) with the term's frequency and the chunk's length, so that
-- scoring a query term reads one index range and never touches `chunks`.
CREATE TABLE chunk_terms (
    collection_id bigint NOT NULL,
    lexeme text COLLATE "C" NOT NULL,
    chunk_id bigint NOT NULL,
    tf integer NOT NULL,
    dl integer NOT NULL,
    PRIMARY KEY (collection_id, lexeme, chunk_id) INCLUDE (tf, dl)
);

INSERT INTO chunk_terms (collection_id, lexeme, chunk_id, tf, dl)
SELECT c.collection_id, t.lexeme, c.id, coalesce(array_length(t.positions, 1), 1), c.term_count
FROM chunks AS c, unnest(c.tsv) AS t;

CREATE FUNCTION ragline_postings_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO chunk_terms (collection_id, lexeme, chunk_id, tf, dl)
    SELECT n.collection_id, t.lexeme, n.id, coalesce(array_length(t.positions, 1), 1), n.term_count
    FROM new_rows AS n, unnest(n.tsv) AS t;
    RETURN NULL;
END $$;

-- Old postings are found through the old row's own lexemes, so the primary key serves the delete.
CREATE FUNCTION ragline_postings_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM chunk_terms AS p
    USING old_rows AS o, unnest(o.tsv) AS t
    WHERE p.collection_id = o.collection_id AND p.lexeme = t.lexeme AND p.chunk_id = o.id;
    RETURN NULL;
END $$;

CREATE FUNCTION ragline_postings_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM chunk_terms AS p
    USING old_rows AS o, unnest(o.tsv) AS t
    WHERE p.collection_id = o.collection_id AND p.lexeme = t.lexeme AND p.chunk_id = o.id;
    INSERT INTO chunk_terms (collection_id, lexeme, chunk_id, tf, dl)
    SELECT n.collection_id, t.lexeme, n.id, coalesce(array_length(t.positions, 1), 1), n.term_count
    FROM new_rows AS n, unnest(n.tsv) AS t;
    RETURN NULL;
END $$;

CREATE TRIGGER chunks_postings_insert AFTER INSERT ON chunks
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION ragline_postings_insert();
CREATE TRIGGER chunks_postings_delete AFTER DELETE ON chunks
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION ragline_postings_delete();
CREATE TRIGGER chunks_postings_update AFTER UPDATE ON chunks
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ragline_postings_update();

-- BM25's chunk count and average length per collection come from an index-only scan of this.
CREATE INDEX chunks_collection_terms_idx ON chunks (collection_id) INCLUDE (term_count);

-- The tsvector GIN index served ts_rank_cd keyword search; postings replace it.
DROP INDEX chunks_tsv_idx;
