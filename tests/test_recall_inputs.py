from spark_jobs.feature_spec import GENRE_IDS
from spark_jobs.recall_inputs import item_terms, user_filter, user_terms


def test_user_terms_keep_seen_genres_strongest_first(spark):
    values = {name: 0 for k in GENRE_IDS for name in (f"user_g{k}_imp", f"user_g{k}_clk")}
    values |= {"user_g2_imp": 3, "user_g2_clk": 1, "user_g7_imp": 2, "user_g7_clk": 2,
               "user_g9_imp": 4, "user_g9_clk": 1, "user_g4_imp": 1}
    counters = spark.createDataFrame([{"userid": 1, **values}])
    terms = [tuple(t) for t in user_terms(counters).collect()[0].terms]
    assert terms == [(7, 2, 2), (9, 4, 1), (2, 3, 1), (4, 1, 0)]


def test_user_filter_and_item_terms(spark):
    offline = spark.createDataFrame([(1, 5), (1, 3), (1, 5), (2, 8)], "userid int, itemid int")
    assert sorted((r.userid, r.seen_itemids) for r in user_filter(offline).collect()) == [(1, [3, 5]), (2, [8])]
    items = spark.createDataFrame([(1, "A", [2, 4])], "itemid int, title string, genre_ids array<int>")
    assert [tuple(r) for r in item_terms(items).collect()] == [(1, [2, 4])]
