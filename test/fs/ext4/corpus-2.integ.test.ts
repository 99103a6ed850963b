/** e2fsprogs corpus, shard 2 of 2 (see corpusShard.ts). */
import { corpusShardTest } from './corpusShard.js';

corpusShardTest(1, 2);
