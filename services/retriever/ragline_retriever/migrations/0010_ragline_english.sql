-- Keyword search tokenises with `ragline_english`: PostgreSQL's `english` (Snowball English stemmer,
-- its stop words) except that a hyphenated compound is indexed as its parts only. `english` also
-- keeps the whole compound as one more lexeme ("boundary-layer" gives boundary-lay, boundari and
-- layer), so a compound counted twice in a chunk's length and a query written "boundary layer"
-- never matched the compound's own term; textbook BM25 (bm25s) splits on the hyphen. Measured with
-- `make eval` (nDCG@10, before -> after): see services/retriever/README.md.
--
-- Chunk terms and query terms both use this configuration (search.py), so every
-- existing chunk is tokenised again here: the UPDATE fires the row trigger, which recomputes `tsv`
-- and `term_count`, and the statement trigger, which replaces the chunk's postings. It rewrites
-- every chunk once, in the migration's transaction.
CREATE TEXT SEARCH CONFIGURATION ragline_english (COPY = pg_catalog.english);
ALTER TEXT SEARCH CONFIGURATION ragline_english DROP MAPPING FOR asciihword, hword, numhword;

CREATE OR REPLACE FUNCTION ragline_chunk_terms() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.tsv := to_tsvector('ragline_english', NEW.text);
    -- A lexeme's positions count its occurrences (stop words leave gaps but no entries).
    NEW.term_count := coalesce(
        (SELECT sum(coalesce(array_length(positions, 1), 1)) FROM unnest(NEW.tsv)), 0);
    RETURN NEW;
END $$;

UPDATE chunks SET text = text;
