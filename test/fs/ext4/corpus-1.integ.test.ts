/** e2fsprogs corpus, shard 1 of 2 (see corpusShard.ts). */
import { corpusShardTest } from './corpusShard.js';

corpusShardTest(0, 2);
