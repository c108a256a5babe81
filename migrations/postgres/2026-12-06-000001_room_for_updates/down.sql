ALTER TABLE opportunities RESET (fillfactor);
