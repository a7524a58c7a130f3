"""fold_in_params: a model extended by new users and items, its own rows untouched."""

import numpy as np
import pytest

from factorflow.engine import FactorParams, Triplets
from factorflow.engine.fold_in import RowRatings, conditional_means, fold_in_params, side_rows
from factorflow.engine.fold_in_priors import gradient_spec
from tests.helpers import random_params

pytestmark = pytest.mark.unit

RANK = 3


class TestFoldInParams:
    def spec(self, rank):
        return gradient_spec(rank, dict(reg=0.05))

    def test_new_users_and_items_are_appended_old_rows_untouched(self):
        params = random_params(6, 5, RANK)
        ratings = Triplets(np.array([7, 7, 6, 1, 2, 9, 1], np.int32),
                           np.array([0, 4, 2, 6, 6, 7, 2], np.int32),
                           np.array([5, 3, 4, 2, 5, 1, 4], np.float32))
        out = fold_in_params(params, ratings, self.spec(RANK))
        p = out.params
        assert p.user_factors.shape == (10, RANK) and p.item_factors.shape == (8, RANK)
        for field, new in zip(FactorParams._fields, p):
            old = np.asarray(getattr(params, field))
            np.testing.assert_array_equal(np.asarray(new)[:old.shape[0]] if old.ndim else new, old)
        # users 6, 7 and item 6 had usable ratings; user 8, user 9 (rated only new item 7)
        # and item 7 (rated only by new user 9) get zero rows; (9, 7) and (1, 2) are ignored
        assert (out.n_users_folded, out.n_items_folded, out.n_ignored) == (2, 1, 2)
        assert np.any(p.user_factors[6:8] != 0) and np.any(p.item_factors[6] != 0)
        assert not np.any(p.user_factors[8:]) and not np.any(p.user_bias[8:])
        assert not np.any(p.item_factors[7]) and p.item_bias[7] == 0

    def test_each_new_row_is_its_conditional_mean(self):
        params = random_params(6, 5, RANK)
        ratings = Triplets(np.array([6, 6, 6, 7], np.int32), np.array([0, 1, 4, 2], np.int32),
                           np.array([5, 3, 4, 2], np.float32))
        spec = self.spec(RANK)
        p = fold_in_params(params, ratings, spec).params
        want = conditional_means(side_rows(params.item_factors, params.item_bias),
                                 float(params.mean), RowRatings(ratings.users - 6, ratings.items,
                                                                ratings.ratings),
                                 n_rows=2, prior=spec.users, alpha=spec.alpha)
        np.testing.assert_allclose(side_rows(p.user_factors, p.user_bias)[6:], want, rtol=1e-6)

    def test_nothing_new_changes_nothing(self):
        params = random_params(6, 5, RANK)
        known = Triplets(np.array([0, 5], np.int32), np.array([1, 4], np.int32),
                         np.ones(2, np.float32))
        out = fold_in_params(params, known, self.spec(RANK))
        assert out.params.user_factors.shape == (6, RANK) and out.n_ignored == 2
        with pytest.raises(ValueError, match="negative index"):
            fold_in_params(params, known._replace(users=np.array([-1, 0], np.int32)),
                           self.spec(RANK))
