"""FactorModel.fold_in and recommend_for: Gibbs and gradient models, persistence, old files."""

import json

import numpy as np
import pytest

from factorflow.engine import FactorModel, TrainConfig, Triplets
from factorflow.engine.fold_in import RowRatings, conditional_means, side_rows
from factorflow.engine.fold_in_priors import PREFIX
from factorflow.engine.metrics import fit_baseline, predict_baseline, rmse
from factorflow.engine.model import FORMAT_VERSION
from tests.helpers import SMALL

pytestmark = pytest.mark.unit

N_OLD = 50  # users 50..59 of small_data are held out of training, then folded in


def _subset(t: Triplets, keep: np.ndarray) -> Triplets:
    return Triplets(*(np.asarray(a)[keep] for a in t))


@pytest.fixture(scope="module")
def gibbs(small_data):
    """A default (Gibbs) model of every user of ``small_data``."""
    return FactorModel.fit(small_data[0], **SMALL, config=TrainConfig(rank=4, epochs=40))


@pytest.fixture(scope="module")
def gibbs_without_new(small_data):
    """The same, trained without users ``N_OLD..``: they are new to it."""
    train = small_data[0]
    return FactorModel.fit(_subset(train, train.users < N_OLD), n_users=N_OLD,
                           n_items=SMALL["n_items"], config=TrainConfig(rank=4, epochs=40))


class TestGibbs:
    def test_spec_holds_the_fits_noise_precision(self, gibbs):
        spec = gibbs.fold_in_spec
        later = gibbs.fit_result.history[20:]
        assert spec.alpha == pytest.approx(np.mean([h["noise_std"] ** -2 for h in later]))
        d = gibbs.rank + 1
        assert spec.users.precision.shape == (d, d) and not spec.users.per_rating.any()

    def test_training_users_fold_back_in_close_to_their_rows(self, gibbs, small_data):
        """The row is an average of conditional means; one conditional mean lands close."""
        train = small_data[0]
        p, spec = gibbs.params, gibbs.fold_in_spec
        x = conditional_means(side_rows(p.item_factors, p.item_bias), float(p.mean),
                              RowRatings(train.users, train.items, train.ratings),
                              n_rows=SMALL["n_users"], prior=spec.users, alpha=spec.alpha)
        refolded = gibbs.fold_in(Triplets(np.zeros(0, np.int32), np.zeros(0, np.int32),
                                          np.zeros(0, np.float32)))  # nothing new: same model
        np.testing.assert_array_equal(refolded.params.user_factors, p.user_factors)
        own = gibbs.predict(train.users, train.items)
        again = (p.mean + x[train.users, -1] + p.item_bias[train.items]
                 + np.sum(x[train.users, :-1] * p.item_factors[train.items], 1))
        assert rmse(again, own) < 0.06  # predictions within a few hundredths of the model's
        assert rmse(again, train.ratings) == pytest.approx(rmse(own, train.ratings), abs=0.02)

    def test_new_users_predict_their_held_out_ratings(self, gibbs_without_new, gibbs,
                                                      small_data):
        train, valid = small_data
        model = gibbs_without_new.fold_in(_subset(train, train.users >= N_OLD))
        assert (model.n_users, model.n_items) == (SMALL["n_users"], SMALL["n_items"])
        np.testing.assert_array_equal(model.params.user_factors[:N_OLD],
                                      gibbs_without_new.params.user_factors)
        new = _subset(valid, valid.users >= N_OLD)
        folded = rmse(model.predict(new.users, new.items), new.ratings)
        retrained = rmse(gibbs.predict(new.users, new.items), new.ratings)
        base = fit_baseline(train, **SMALL)
        assert folded < retrained + 0.03
        assert folded < rmse(predict_baseline(base, new.users, new.items), new.ratings) - 0.1
        assert model.fold_in_spec is gibbs_without_new.fold_in_spec  # the prior does not drift

    def test_new_items_fold_in_too(self, small_data):
        train, valid = small_data
        old = train.items < 40
        model = FactorModel.fit(_subset(train, old), n_users=SMALL["n_users"], n_items=40,
                                config=TrainConfig(rank=4, epochs=40))
        extended = model.fold_in(_subset(train, ~old))
        assert extended.n_items == SMALL["n_items"]
        np.testing.assert_array_equal(extended.params.item_factors[:40],
                                      model.params.item_factors)
        new = _subset(valid, valid.items >= 40)
        base = fit_baseline(_subset(train, old), n_users=SMALL["n_users"], n_items=40)
        unknown_item = predict_baseline(base, new.users, np.zeros_like(new.items)) - \
            base.item_bias[0]  # mean + user bias: what a model without the item predicts
        assert rmse(extended.predict(new.users, new.items), new.ratings) < rmse(
            unknown_item, new.ratings) - 0.1

    def test_huber_folds_in(self, small_data):
        train = small_data[0]
        model = FactorModel.fit(_subset(train, train.users < N_OLD), n_users=N_OLD,
                                n_items=SMALL["n_items"],
                                config=TrainConfig(rank=4, epochs=20, loss="huber"))
        assert model.fold_in_spec.loss == "huber"
        extended = model.fold_in(_subset(train, train.users >= N_OLD))
        assert np.all(np.isfinite(extended.params.user_factors))
        assert np.any(extended.params.user_factors[N_OLD:] != 0)


class TestRecommendFor:
    def test_excludes_the_given_items_and_ranks_like_fold_in_then_recommend(self, gibbs):
        items, ratings = np.array([3, 7, 11, 20]), np.array([5.0, 4.0, 1.0, 2.0])
        ids, scores = gibbs.recommend_for(items, ratings, N=8)
        assert ids.shape == scores.shape == (8,) and not set(ids) & set(items)
        new_user = gibbs.n_users
        extended = gibbs.fold_in(Triplets(np.full(4, new_user, np.int32), items.astype(np.int32),
                                          ratings.astype(np.float32)))
        seen = Triplets(np.full(4, new_user, np.int32), items.astype(np.int32),
                        ratings.astype(np.float32))
        want_ids, want_scores = extended.recommend(np.array([new_user]), N=8, seen=seen)
        np.testing.assert_array_equal(ids, want_ids[0])
        np.testing.assert_allclose(scores, want_scores[0], rtol=1e-5)

    def test_pads_with_minus_one_when_few_items_remain(self, gibbs):
        items = np.arange(SMALL["n_items"] - 2)
        ids, scores = gibbs.recommend_for(items, np.full(items.shape, 3.0), N=5)
        assert set(ids[:2]) == {SMALL["n_items"] - 2, SMALL["n_items"] - 1}
        np.testing.assert_array_equal(ids[2:], -1)
        assert np.all(np.isneginf(scores[2:])) and np.all(np.isfinite(scores[:2]))

    def test_unknown_items_are_refused(self, gibbs):
        with pytest.raises(ValueError, match="item_ids range"):
            gibbs.recommend_for([SMALL["n_items"]], [4.0])


class TestPersistence:
    def test_save_load_keeps_the_spec(self, gibbs, tmp_path):
        gibbs.save(tmp_path / "m.npz")
        loaded = FactorModel.load(tmp_path / "m.npz")
        a, b = gibbs.fold_in_spec, loaded.fold_in_spec
        assert (a.alpha, a.loss, a.biases, a.nonneg) == (b.alpha, b.loss, b.biases, b.nonneg)
        for side in ("users", "items"):
            for x, y in zip(getattr(a, side), getattr(b, side)):
                np.testing.assert_array_equal(x, y)
        items, ratings = np.array([1, 2, 3]), np.array([5.0, 1.0, 4.0])
        np.testing.assert_array_equal(loaded.recommend_for(items, ratings)[0],
                                      gibbs.recommend_for(items, ratings)[0])

    def test_an_old_file_without_the_spec_still_folds_in(self, gibbs_without_new, small_data,
                                                         tmp_path):
        """A file from before fold-in: the documented fallback (alpha from the new ratings)."""
        path = tmp_path / "old.npz"
        p = gibbs_without_new.params
        np.savez(path, format_version=np.int32(FORMAT_VERSION), mean=p.mean,
                 user_bias=p.user_bias, item_bias=p.item_bias, user_factors=p.user_factors,
                 item_factors=p.item_factors,
                 config_json=np.array(json.dumps(gibbs_without_new.config)))
        old = FactorModel.load(path)
        assert old.fold_in_spec is None
        train, valid = small_data
        model = old.fold_in(_subset(train, train.users >= N_OLD))
        assert model.fold_in_spec is not None and model.fold_in_spec.alpha > 0
        new = _subset(valid, valid.users >= N_OLD)
        base = fit_baseline(train, **SMALL)
        assert rmse(model.predict(new.users, new.items), new.ratings) < rmse(
            predict_baseline(base, new.users, new.items), new.ratings) - 0.05
        ids, _ = FactorModel(p).recommend_for([0, 1], [5.0, 4.0], N=3)  # no config at all
        assert ids.shape == (3,) and 0 not in ids and 1 not in ids

    def test_an_l1_model_has_no_spec_and_says_why(self, small_data, tmp_path):
        config = TrainConfig(optimizer="adam", rank=3, epochs=3, penalty="l1")
        model = FactorModel.fit(small_data[0], **SMALL, config=config)
        assert model.fold_in_spec is None
        model.save(tmp_path / "l1.npz")
        assert not any(key.startswith(PREFIX) for key in np.load(tmp_path / "l1.npz").files)
        with pytest.raises(ValueError, match="l2-penalised"):
            model.fold_in(Triplets(np.array([SMALL["n_users"]], np.int32),
                                   np.array([0], np.int32), np.array([4.0], np.float32)))

